/*
 * A stand-in for the CUDA driver (libcuda.so.1) on build machines without a GPU.
 *
 * TVM's CUDA runtime library links against the driver, and TVM only compiles kernels to a
 * fatbin at build time when that library loads. Every entry point here reports that there is
 * no device, so nothing can run on it; it exists only so that `TVM_CUDA_COMPILE_MODE=nvcc`
 * builds embed sm_XX machine code. Written for sdpack; the symbol list is exactly what
 * libtvm_runtime_cuda.so imports from the driver (see packer/compile/cuda_stub/__init__.py).
 */
#include <stddef.h>

#define NO_DEVICE 100 /* CUDA_ERROR_NO_DEVICE */

typedef int result_t;

static const char kName[] = "CUDA_ERROR_NO_DEVICE";
static const char kText[] = "no CUDA device (sdpack build-time driver stub)";

result_t cuGetErrorName(result_t err, const char **out) {
  (void)err;
  if (out) *out = kName;
  return 0;
}

result_t cuGetErrorString(result_t err, const char **out) {
  (void)err;
  if (out) *out = kText;
  return 0;
}

result_t cuInit(unsigned flags) { (void)flags; return NO_DEVICE; }
result_t cuDriverGetVersion(int *version) { if (version) *version = 0; return NO_DEVICE; }
result_t cuDeviceGetCount(int *count) { if (count) *count = 0; return NO_DEVICE; }
result_t cuDeviceGetName(char *name, int len, int dev) {
  (void)dev;
  if (name && len > 0) name[0] = '\0';
  return NO_DEVICE;
}
result_t cuFuncSetAttribute(void *fn, int attr, int value) {
  (void)fn; (void)attr; (void)value;
  return NO_DEVICE;
}
result_t cuLaunchKernelEx(const void *config, void *fn, void **params, void **extra) {
  (void)config; (void)fn; (void)params; (void)extra;
  return NO_DEVICE;
}
result_t cuModuleGetFunction(void **fn, void *mod, const char *name) {
  (void)mod; (void)name;
  if (fn) *fn = NULL;
  return NO_DEVICE;
}
result_t cuModuleLoadData(void **mod, const void *image) {
  (void)image;
  if (mod) *mod = NULL;
  return NO_DEVICE;
}
result_t cuModuleUnload(void *mod) { (void)mod; return NO_DEVICE; }
result_t cuTensorMapEncodeTiled(void *map, int dtype, unsigned rank, void *addr,
                                const void *dims, const void *strides, const void *box,
                                const void *elem_strides, int interleave, int swizzle,
                                int promotion, int fill) {
  (void)map; (void)dtype; (void)rank; (void)addr; (void)dims; (void)strides; (void)box;
  (void)elem_strides; (void)interleave; (void)swizzle; (void)promotion; (void)fill;
  return NO_DEVICE;
}
