# Warnings for the project's own code: -Wall -Wextra -Werror.
function(derpd_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Werror -Wno-unused-parameter)
endfunction()
