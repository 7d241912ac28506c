# derpd_fuzz_target(name source...): a libFuzzer binary linked with derpd_common.
# Built only with -DDERPD_FUZZ=ON and clang.
function(derpd_fuzz_target name)
  add_executable(${name} ${ARGN})
  target_compile_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined -g)
  target_link_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(${name} PRIVATE derpd_common)
  derpd_warnings(${name})
endfunction()
