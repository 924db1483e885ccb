// Run one sdpack WebGPU library (.wasm) under tvmjs in Deno (wgpu; Mesa lavapipe on CI).
//
//   deno run --unstable-webgpu --allow-read --allow-write run.js TVMJS WASM REQUEST OUT
//
// TVMJS is @mlc-ai/web-runtime's lib/index.js (the tvmjs runtime sdpack targets); REQUEST is a
// JSON file {"blob": "<path>", "tensors": [{"shape", "dtype", "offset", "nbytes"}, ...]} naming
// main's arguments (inputs, then params) as raw little-endian bytes in one blob, and "n_inputs"
// (optional): where the params start, which then go through main_transform_params first where the
// library has that function (runtime-web does the same once after upload). The output
// tensor's raw bytes go to OUT; one JSON line on stdout says its shape, dtype and the adapter.
import { createRequire } from "node:module";

const [tvmjsPath, wasmPath, requestPath, outPath] = Deno.args;
const require = createRequire(import.meta.url);
const tvmjs = require(tvmjsPath);

const request = JSON.parse(await Deno.readTextFile(requestPath));
const blob = await Deno.readFile(request.blob);
const gpu = await tvmjs.detectGPUDevice();
if (gpu === undefined) throw new Error("no WebGPU adapter");
const wasm = await Deno.readFile(wasmPath);
const tvm = await tvmjs.instantiate(wasm.buffer, tvmjs.createPolyfillWASI(), () => {});
tvm.initWebGPU(gpu.device);

tvm.beginScope();
const dev = tvm.webgpu();
const vm = tvm.createVirtualMachine(dev);
const main = vm.getFunction("main");
// Staged through a CPU tensor: WebGPU's direct raw-byte uploads need 4-byte multiples, which
// float16 tensors with an odd element count are not.
const args = request.tensors.map((t) => {
  const host = tvm.empty(t.shape, t.dtype, tvm.cpu())
    .copyFromRawBytes(blob.slice(t.offset, t.offset + t.nbytes));
  return tvm.empty(t.shape, t.dtype, dev).copyFrom(host);
});
let callArgs = args;
if (request.n_inputs != null) {
  let transform = null;
  try {
    transform = vm.getFunction("main_transform_params");
  } catch {
    transform = null; // a library without weight transforms
  }
  if (transform) {
    const params = args.slice(request.n_inputs);
    const arr = transform(tvm.makeTVMArray(params));
    const transformed = [];
    for (let i = 0; i < arr.size(); i++) transformed.push(arr.get(i));
    callArgs = [...args.slice(0, request.n_inputs), ...transformed];
  }
}
const out = main(...callArgs);
const host = tvm.empty(out.shape, out.dtype, tvm.cpu()).copyFrom(out);
await dev.sync();
await Deno.writeFile(outPath, host.toRawBytes());
const info = gpu.adapterInfo ?? {};
console.log(JSON.stringify({ shape: out.shape, dtype: out.dtype,
                             adapter: `${info.vendor ?? ""} ${info.architecture ?? ""} ${info.description ?? ""}`.trim() }));
tvm.endScope();
tvm.dispose();
