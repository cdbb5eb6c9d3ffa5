# CPU-only build of the same addon with node-gyp (scripts/build-gyp.sh builds it in a temp dir).
# cmake-js (CMakeLists.txt) is the main build; this one never compiles the CUDA backend.
# Generic x86-64 baseline: the hot kernels carry their own AVX2/AVX-512 target attributes.
{
  "targets": [
    {
      "target_name": "adrank",
      "sources": [
        "<!@(ls -1 native/engine/*.cc native/kernels/cpu/*.cc native/addon/*.cc)"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "native"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_CPP_EXCEPTIONS",
        "NODE_ADDON_API_CPP_EXCEPTIONS_ALL",
        "NODE_ADDON_API_DISABLE_DEPRECATED",
        "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"
      ],
      "cflags!": ["-fno-exceptions", "-O2", "-O3"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17", "-std=c++17", "-O2", "-O3"],
      "cflags": ["-O3", "-fno-math-errno", "-ffp-contract=off"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-frtti", "-O3", "-fno-math-errno", "-ffp-contract=off"],
      "ldflags": ["-pthread"],
      "xcode_settings": {
        "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
        "OTHER_CFLAGS": ["-O3", "-fno-math-errno", "-ffp-contract=off"]
      },
      "msvs_settings": {
        "VCCLCompilerTool": { "ExceptionHandling": 1, "AdditionalOptions": ["/std:c++17"] }
      }
    }
  ]
}
