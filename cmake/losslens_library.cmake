# losslens_library(NAME EXPORT_NAME SOURCES...): a static library target losslens_NAME with the
# alias losslens::EXPORT_NAME, public headers in <dir>/include, private ones in <dir>/src,
# exported in losslensTargets and installed with its headers.
function(losslens_library name export_name)
  add_library(losslens_${name} ${ARGN})
  add_library(losslens::${export_name} ALIAS losslens_${name})
  set_target_properties(losslens_${name} PROPERTIES EXPORT_NAME ${export_name}
                        OUTPUT_NAME losslens_${name} POSITION_INDEPENDENT_CODE ON)
  target_include_directories(losslens_${name}
    PUBLIC $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include>
           $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>
    PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
  target_compile_features(losslens_${name} PUBLIC cxx_std_20)
  install(TARGETS losslens_${name} EXPORT losslensTargets
          ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
          LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
  install(DIRECTORY include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} FILES_MATCHING PATTERN "*.hpp")
endfunction()
