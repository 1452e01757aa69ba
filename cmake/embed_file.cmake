# Turns a file into a C array at build time, so the binary never reads it at
# run time:
#   cmake -DINPUT=page.html -DOUTPUT=page.c -DSYMBOL=name -P embed_file.cmake
# defines `const unsigned char name[]` (the bytes plus a terminating NUL) and
# `const size_t name_len` (the byte count without the NUL).
if(NOT INPUT OR NOT OUTPUT OR NOT SYMBOL)
  message(FATAL_ERROR "embed_file.cmake needs -DINPUT, -DOUTPUT and -DSYMBOL")
endif()
file(READ "${INPUT}" hex HEX)
string(LENGTH "${hex}" digits)
math(EXPR size "${digits} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REPEAT "0x[0-9a-f][0-9a-f]," 16 line) # CMake's regex has no {16}
string(REGEX REPLACE "(${line})" "\\1\n    " bytes "${bytes}")
get_filename_component(name "${INPUT}" NAME)
file(WRITE "${OUTPUT}.tmp"
  "/* Generated from ${name} by cmake/embed_file.cmake: do not edit. */\n"
  "#include <stddef.h>\n\n"
  "extern const unsigned char ${SYMBOL}[];\n"
  "extern const size_t ${SYMBOL}_len;\n"
  "const unsigned char ${SYMBOL}[] = {\n    ${bytes}0x00};\n"
  "const size_t ${SYMBOL}_len = ${size};\n")
file(RENAME "${OUTPUT}.tmp" "${OUTPUT}")
