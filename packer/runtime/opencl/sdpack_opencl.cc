// sdpack's OpenCL runtime plugin for the apache-tvm wheel.
//
// The wheel compiles for target "opencl" but its runtime has no OpenCL support: no
// "device_api.opencl" (memory, copies, sync) and no "ffi.Module.load_from_bytes.opencl" (the
// loader a library asks for when it embeds OpenCL kernels). This file provides both, written
// against the headers the wheel ships, and is compiled by packer/runtime/opencl_runtime.py.
// Loaded into the process (RTLD_GLOBAL) before a bundle library, its static initialiser
// registers the two globals (and sdpack.opencl.device_extensions), after which tvm.opencl(0) and VirtualMachine work as for CUDA.
//
// Device memory: a tensor's data pointer is the cl_mem itself (OpenCL buffers are opaque).
// One in-order command queue per device; every host<->device copy is blocking, so a kernel
// launch order plus clFinish in StreamSync is all the synchronisation the VM needs.

#include <CL/cl.h>
#include <dlpack/dlpack.h>
#include <tvm/ffi/cast.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/reflection/registry.h>
#include <tvm/ffi/string.h>
#include <tvm/runtime/device_api.h>

#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace sdpack_opencl {

using tvm::Device;
using tvm::runtime::DeviceAPI;
using tvm::runtime::DeviceAttrKind;
namespace ffi = tvm::ffi;

[[noreturn]] void Fail(const std::string& what, cl_int err) {
  TVM_FFI_THROW(RuntimeError) << "OpenCL: " << what << " failed with error " << err;
  TVM_FFI_UNREACHABLE();
}

inline void Check(cl_int err, const char* what) {
  if (err != CL_SUCCESS) Fail(what, err);
}

std::string DeviceString(cl_device_id dev, cl_device_info what) {
  size_t n = 0;
  Check(clGetDeviceInfo(dev, what, 0, nullptr, &n), "clGetDeviceInfo");
  std::string s(n, '\0');
  Check(clGetDeviceInfo(dev, what, n, s.data(), nullptr), "clGetDeviceInfo");
  while (!s.empty() && s.back() == '\0') s.pop_back();
  return s;
}

template <typename T>
T DeviceValue(cl_device_id dev, cl_device_info what) {
  T value{};
  Check(clGetDeviceInfo(dev, what, sizeof(T), &value, nullptr), "clGetDeviceInfo");
  return value;
}

// The devices of the first OpenCL platform that has any (GPUs listed first), one context and
// one in-order queue each. Created on first use; lives for the process.
class Workspace {
 public:
  static Workspace* Global() {
    static Workspace* inst = new Workspace();
    return inst;
  }

  size_t count() const { return devices_.size(); }

  cl_device_id device(int id) const {
    if (id < 0 || static_cast<size_t>(id) >= devices_.size()) {
      TVM_FFI_THROW(RuntimeError) << "OpenCL: no device " << id << " (" << devices_.size()
                                  << " found; is an OpenCL driver (ICD) installed?)";
    }
    return devices_[id];
  }
  cl_context context() const { return context_; }
  cl_command_queue queue(int id) const {
    device(id);
    return queues_[id];
  }

 private:
  Workspace() {
    cl_uint n_platforms = 0;
    if (clGetPlatformIDs(0, nullptr, &n_platforms) != CL_SUCCESS || n_platforms == 0) return;
    std::vector<cl_platform_id> platforms(n_platforms);
    Check(clGetPlatformIDs(n_platforms, platforms.data(), nullptr), "clGetPlatformIDs");
    for (cl_platform_id platform : platforms) {
      for (cl_device_type type : {CL_DEVICE_TYPE_GPU, CL_DEVICE_TYPE_ACCELERATOR,
                                  CL_DEVICE_TYPE_CPU}) {
        cl_uint n = 0;
        if (clGetDeviceIDs(platform, type, 0, nullptr, &n) != CL_SUCCESS || n == 0) continue;
        std::vector<cl_device_id> found(n);
        Check(clGetDeviceIDs(platform, type, n, found.data(), nullptr), "clGetDeviceIDs");
        devices_.insert(devices_.end(), found.begin(), found.end());
      }
      if (!devices_.empty()) break;
    }
    if (devices_.empty()) return;
    cl_int err = CL_SUCCESS;
    context_ = clCreateContext(nullptr, static_cast<cl_uint>(devices_.size()), devices_.data(),
                               nullptr, nullptr, &err);
    Check(err, "clCreateContext");
    for (cl_device_id dev : devices_) {
      queues_.push_back(clCreateCommandQueue(context_, dev, 0, &err));
      Check(err, "clCreateCommandQueue");
    }
  }

  std::vector<cl_device_id> devices_;
  cl_context context_ = nullptr;
  std::vector<cl_command_queue> queues_;
};

class OpenCLDeviceAPI final : public DeviceAPI {
 public:
  static OpenCLDeviceAPI* Global() {
    static OpenCLDeviceAPI* inst = new OpenCLDeviceAPI();
    return inst;
  }

  void SetDevice(Device dev) final {}

  void GetAttr(Device dev, DeviceAttrKind kind, ffi::Any* rv) final {
    Workspace* w = Workspace::Global();
    if (kind == tvm::runtime::kExist) {
      *rv = static_cast<int>(dev.device_id >= 0 &&
                             static_cast<size_t>(dev.device_id) < w->count());
      return;
    }
    if (static_cast<size_t>(dev.device_id) >= w->count()) return;
    cl_device_id d = w->device(dev.device_id);
    switch (kind) {
      case tvm::runtime::kMaxThreadsPerBlock:
        *rv = static_cast<int64_t>(DeviceValue<size_t>(d, CL_DEVICE_MAX_WORK_GROUP_SIZE));
        break;
      case tvm::runtime::kWarpSize:
        *rv = 1;
        break;
      case tvm::runtime::kMaxSharedMemoryPerBlock:
        *rv = static_cast<int64_t>(DeviceValue<cl_ulong>(d, CL_DEVICE_LOCAL_MEM_SIZE));
        break;
      case tvm::runtime::kComputeVersion:
      case tvm::runtime::kApiVersion:
        *rv = ffi::String(DeviceString(d, CL_DEVICE_VERSION));
        break;
      case tvm::runtime::kDeviceName:
        *rv = ffi::String(DeviceString(d, CL_DEVICE_NAME));
        break;
      case tvm::runtime::kDriverVersion:
        *rv = ffi::String(DeviceString(d, CL_DRIVER_VERSION));
        break;
      case tvm::runtime::kMaxClockRate:
        *rv = static_cast<int64_t>(DeviceValue<cl_uint>(d, CL_DEVICE_MAX_CLOCK_FREQUENCY));
        break;
      case tvm::runtime::kMultiProcessorCount:
        *rv = static_cast<int64_t>(DeviceValue<cl_uint>(d, CL_DEVICE_MAX_COMPUTE_UNITS));
        break;
      case tvm::runtime::kTotalGlobalMemory:
        *rv = static_cast<int64_t>(DeviceValue<cl_ulong>(d, CL_DEVICE_GLOBAL_MEM_SIZE));
        break;
      default:
        break;  // unknown attributes stay None, as in TVM's own device APIs
    }
  }

  void* AllocDataSpace(Device dev, size_t nbytes, size_t alignment, DLDataType type_hint) final {
    Workspace* w = Workspace::Global();
    w->device(dev.device_id);
    cl_int err = CL_SUCCESS;
    cl_mem mem = clCreateBuffer(w->context(), CL_MEM_READ_WRITE, nbytes == 0 ? 1 : nbytes,
                                nullptr, &err);
    if (err != CL_SUCCESS) Fail("clCreateBuffer of " + std::to_string(nbytes) + " bytes", err);
    return mem;
  }

  void FreeDataSpace(Device dev, void* ptr) final {
    if (ptr != nullptr) clReleaseMemObject(static_cast<cl_mem>(ptr));
  }

  void StreamSync(Device dev, TVMStreamHandle stream) final {
    Check(clFinish(Workspace::Global()->queue(dev.device_id)), "clFinish");
  }

 protected:
  void CopyDataFromTo(const void* from, size_t from_offset, void* to, size_t to_offset,
                      size_t size, Device dev_from, Device dev_to, DLDataType type_hint,
                      TVMStreamHandle stream) final {
    if (size == 0) return;
    Workspace* w = Workspace::Global();
    bool from_cl = dev_from.device_type == kDLOpenCL;
    bool to_cl = dev_to.device_type == kDLOpenCL;
    if (from_cl && to_cl) {
      Check(clEnqueueCopyBuffer(w->queue(dev_from.device_id),
                                static_cast<cl_mem>(const_cast<void*>(from)),
                                static_cast<cl_mem>(to), from_offset, to_offset, size, 0,
                                nullptr, nullptr),
            "clEnqueueCopyBuffer");
    } else if (from_cl && dev_to.device_type == kDLCPU) {
      Check(clEnqueueReadBuffer(w->queue(dev_from.device_id),
                                static_cast<cl_mem>(const_cast<void*>(from)), CL_TRUE,
                                from_offset, size, static_cast<char*>(to) + to_offset, 0,
                                nullptr, nullptr),
            "clEnqueueReadBuffer");
    } else if (to_cl && dev_from.device_type == kDLCPU) {
      Check(clEnqueueWriteBuffer(w->queue(dev_to.device_id), static_cast<cl_mem>(to), CL_TRUE,
                                 to_offset, size, static_cast<const char*>(from) + from_offset,
                                 0, nullptr, nullptr),
            "clEnqueueWriteBuffer");
    } else {
      TVM_FFI_THROW(RuntimeError) << "OpenCL: copy between device types " << dev_from.device_type
                                  << " and " << dev_to.device_type << " is not supported";
    }
  }
};

// What the codegen records for each kernel: argument dtypes and the launch-parameter tags
// ("blockIdx.x", "threadIdx.y", ...) whose values follow the arguments in every call.
struct KernelInfo {
  std::vector<DLDataType> arg_types;
  std::vector<std::string> launch_tags;
};

// Reads the module's serialized form: little-endian u64 lengths/counts before strings and
// arrays, DLDataType as 4 bytes, enum tags as 4 bytes.
class ByteReader {
 public:
  ByteReader(const char* data, size_t size) : data_(data), size_(size) {}

  uint64_t U64() {
    uint64_t v;
    Take(&v, sizeof(v));
    return v;
  }
  std::string Str() {
    uint64_t n = U64();
    Need(n);
    std::string s(data_ + pos_, n);
    pos_ += n;
    return s;
  }
  DLDataType DType() {
    DLDataType t;
    Take(&t.code, 1);
    Take(&t.bits, 1);
    Take(&t.lanes, 2);
    return t;
  }
  void Skip(size_t n) {
    Need(n);
    pos_ += n;
  }

 private:
  void Need(uint64_t n) {
    if (n > size_ - pos_) {
      TVM_FFI_THROW(RuntimeError) << "OpenCL module: truncated or malformed serialized module";
    }
  }
  void Take(void* out, size_t n) {
    Need(n);
    std::memcpy(out, data_ + pos_, n);
    pos_ += n;
  }
  const char* data_;
  size_t size_;
  size_t pos_ = 0;
};

class OpenCLModuleObj final : public ffi::ModuleObj {
 public:
  OpenCLModuleObj(std::string fmt, std::unordered_map<std::string, KernelInfo> kernels,
                  std::string source, std::string saved)
      : fmt_(std::move(fmt)),
        kernels_(std::move(kernels)),
        source_(std::move(source)),
        saved_(std::move(saved)) {}

  ~OpenCLModuleObj() {
    for (auto& [key, kernel] : built_kernels_) clReleaseKernel(kernel);
    for (auto& [id, program] : programs_) clReleaseProgram(program);
  }

  const char* kind() const final { return "opencl"; }

  int GetPropertyMask() const final {
    return ffi::Module::kBinarySerializable | ffi::Module::kRunnable;
  }

  ffi::Bytes SaveToBytes() const final { return ffi::Bytes(saved_); }

  ffi::String InspectSource(const ffi::String& format) const final { return source_; }

  ffi::Optional<ffi::Function> GetFunction(const ffi::String& name) final {
    auto it = kernels_.find(std::string(name));
    if (it == kernels_.end()) return std::nullopt;
    const KernelInfo& info = it->second;
    std::string kernel_name = it->first;
    ffi::ObjectPtr<OpenCLModuleObj> self = ffi::GetObjectPtr<OpenCLModuleObj>(this);
    return ffi::Function::FromPacked([self, kernel_name, info](ffi::PackedArgs args,
                                                               ffi::Any* rv) {
      self->Launch(kernel_name, info, args);
    });
  }

 private:
  void Launch(const std::string& name, const KernelInfo& info, ffi::PackedArgs args) {
    size_t n_args = info.arg_types.size();
    if (static_cast<size_t>(args.size()) != n_args + info.launch_tags.size()) {
      TVM_FFI_THROW(RuntimeError) << "OpenCL kernel " << name << ": expected "
                                  << n_args + info.launch_tags.size() << " arguments, got "
                                  << args.size();
    }
    // The VM calls kernels from one thread, but a cl_kernel's arguments are shared state.
    std::lock_guard<std::mutex> lock(mutex_);
    int device_id = 0;  // the VM runs a library on one device: the first the runtime offers
    cl_kernel kernel = Kernel(device_id, name);
    for (size_t i = 0; i < n_args; ++i) SetArg(kernel, static_cast<cl_uint>(i), info.arg_types[i],
                                               args[i], name);
    size_t group[3] = {1, 1, 1};
    size_t local[3] = {1, 1, 1};
    for (size_t j = 0; j < info.launch_tags.size(); ++j) {
      const std::string& tag = info.launch_tags[j];
      int64_t value = args[n_args + j].cast<int64_t>();
      if (tag.size() == 10 && tag.compare(0, 9, "blockIdx.") == 0) {
        group[tag[9] - 'x'] = static_cast<size_t>(value);
      } else if (tag.size() == 11 && tag.compare(0, 10, "threadIdx.") == 0) {
        local[tag[10] - 'x'] = static_cast<size_t>(value);
      } else {
        TVM_FFI_THROW(RuntimeError) << "OpenCL kernel " << name << ": launch parameter " << tag
                                    << " is not supported by sdpack's OpenCL runtime";
      }
    }
    size_t global[3];
    for (int d = 0; d < 3; ++d) global[d] = group[d] * local[d];
    if (global[0] == 0 || global[1] == 0 || global[2] == 0) return;  // empty launch: no work
    cl_int err = clEnqueueNDRangeKernel(Workspace::Global()->queue(device_id), kernel, 3,
                                        nullptr, global, local, 0, nullptr, nullptr);
    if (err != CL_SUCCESS) Fail("clEnqueueNDRangeKernel(" + name + ")", err);
  }

  static void SetArg(cl_kernel kernel, cl_uint index, DLDataType t, const ffi::AnyView& arg,
                     const std::string& name) {
    cl_int err = CL_SUCCESS;
    if (t.code == kDLOpaqueHandle) {
      cl_mem mem = static_cast<cl_mem>(arg.cast<void*>());
      err = clSetKernelArg(kernel, index, sizeof(cl_mem), &mem);
    } else if ((t.code == kDLInt || t.code == kDLUInt) && t.bits == 32) {
      int32_t v = static_cast<int32_t>(arg.cast<int64_t>());
      err = clSetKernelArg(kernel, index, sizeof(v), &v);
    } else if ((t.code == kDLInt || t.code == kDLUInt) && t.bits == 64) {
      int64_t v = arg.cast<int64_t>();
      err = clSetKernelArg(kernel, index, sizeof(v), &v);
    } else if (t.code == kDLFloat && t.bits == 32) {
      float v = static_cast<float>(arg.cast<double>());
      err = clSetKernelArg(kernel, index, sizeof(v), &v);
    } else if (t.code == kDLFloat && t.bits == 64) {
      double v = arg.cast<double>();
      err = clSetKernelArg(kernel, index, sizeof(v), &v);
    } else {
      TVM_FFI_THROW(RuntimeError) << "OpenCL kernel " << name << ": argument " << index
                                  << " has a dtype sdpack's OpenCL runtime does not pass";
    }
    if (err != CL_SUCCESS) Fail("clSetKernelArg(" + name + ")", err);
  }

  // The program is built once per device on first launch; kernels are created once by name.
  cl_kernel Kernel(int device_id, const std::string& name) {
    auto key = std::make_pair(device_id, name);
    auto found = built_kernels_.find(key);
    if (found != built_kernels_.end()) return found->second;
    cl_int err = CL_SUCCESS;
    cl_kernel kernel = clCreateKernel(Program(device_id), name.c_str(), &err);
    if (err != CL_SUCCESS) Fail("clCreateKernel(" + name + ")", err);
    built_kernels_[key] = kernel;
    return kernel;
  }

  cl_program Program(int device_id) {
    auto found = programs_.find(device_id);
    if (found != programs_.end()) return found->second;
    if (fmt_ != "cl") {
      TVM_FFI_THROW(RuntimeError) << "OpenCL module: format " << fmt_
                                  << " is not supported (only OpenCL C source, \"cl\")";
    }
    Workspace* w = Workspace::Global();
    cl_device_id dev = w->device(device_id);
    const char* text = source_.c_str();
    size_t length = source_.size();
    cl_int err = CL_SUCCESS;
    cl_program program = clCreateProgramWithSource(w->context(), 1, &text, &length, &err);
    Check(err, "clCreateProgramWithSource");
    err = clBuildProgram(program, 1, &dev, nullptr, nullptr, nullptr);
    if (err != CL_SUCCESS) {
      size_t n = 0;
      clGetProgramBuildInfo(program, dev, CL_PROGRAM_BUILD_LOG, 0, nullptr, &n);
      std::string log(n, '\0');
      clGetProgramBuildInfo(program, dev, CL_PROGRAM_BUILD_LOG, n, log.data(), nullptr);
      clReleaseProgram(program);
      TVM_FFI_THROW(RuntimeError) << "OpenCL: building the kernels for "
                                  << DeviceString(dev, CL_DEVICE_NAME) << " failed (error "
                                  << err << "): " << log.substr(0, 2000);
    }
    programs_[device_id] = program;
    return program;
  }

  std::string fmt_;
  std::unordered_map<std::string, KernelInfo> kernels_;
  std::string source_;
  std::string saved_;
  std::mutex mutex_;
  std::unordered_map<int, cl_program> programs_;
  struct PairHash {
    size_t operator()(const std::pair<int, std::string>& p) const {
      return std::hash<std::string>()(p.second) * 31 + static_cast<size_t>(p.first);
    }
  };
  std::unordered_map<std::pair<int, std::string>, cl_kernel, PairHash> built_kernels_;
};

// The serialized module: format string, a map of kernel name -> function info (name, argument
// dtypes, launch tags, per-argument extra tags), then the code (OpenCL C source for "cl").
ffi::Module LoadFromBytes(const ffi::Bytes& bytes) {
  ByteReader in(bytes.data(), bytes.size());
  std::string fmt = in.Str();
  uint64_t n_kernels = in.U64();
  std::unordered_map<std::string, KernelInfo> kernels;
  for (uint64_t k = 0; k < n_kernels; ++k) {
    std::string key = in.Str();
    in.Str();  // the info's own copy of the name
    KernelInfo info;
    uint64_t n_types = in.U64();
    for (uint64_t i = 0; i < n_types; ++i) info.arg_types.push_back(in.DType());
    uint64_t n_tags = in.U64();
    for (uint64_t i = 0; i < n_tags; ++i) info.launch_tags.push_back(in.Str());
    uint64_t n_extra = in.U64();
    in.Skip(n_extra * 4);  // per-argument extra tags (CUDA tensor maps): none in OpenCL code
    kernels.emplace(std::move(key), std::move(info));
  }
  std::string source = in.Str();
  auto obj = ffi::make_object<OpenCLModuleObj>(std::move(fmt), std::move(kernels),
                                               std::move(source),
                                               std::string(bytes.data(), bytes.size()));
  return ffi::Module(obj);
}

}  // namespace sdpack_opencl

TVM_FFI_STATIC_INIT_BLOCK() {
  namespace refl = tvm::ffi::reflection;
  refl::GlobalDef()
      .def("ffi.Module.load_from_bytes.opencl", sdpack_opencl::LoadFromBytes)
      // The device's CL_DEVICE_EXTENSIONS, so a float16 library is only picked where the
      // device has cl_khr_fp16 (packer/runtime/generate.py).
      .def("sdpack.opencl.device_extensions",
           [](int device_id) {
             return tvm::ffi::String(sdpack_opencl::DeviceString(
                 sdpack_opencl::Workspace::Global()->device(device_id), CL_DEVICE_EXTENSIONS));
           })
      .def_packed("device_api.opencl", [](tvm::ffi::PackedArgs args, tvm::ffi::Any* rv) {
        *rv = static_cast<void*>(sdpack_opencl::OpenCLDeviceAPI::Global());
      });
}
