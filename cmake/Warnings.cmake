# Warnings for the project's own code: -Wall -Wextra, and -Werror when
# DERPD_WERROR is on (the Makefile's and CI's builds; never a packager's).
function(derpd_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter)
  if(DERPD_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
