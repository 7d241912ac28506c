# Sanitizer builds apply to every target of the tree (project code and tests).
if(DERPD_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-sanitize-recover=undefined
                      -fno-omit-frame-pointer -g)
  add_link_options(-fsanitize=address,undefined)
  add_compile_definitions(DERPD_SANITIZED=1)
endif()
if(DERPD_TSAN)
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer -g)
  add_link_options(-fsanitize=thread)
  add_compile_definitions(DERPD_SANITIZED=1)
endif()
