/**
 * The parameters a generated image was made with, as PNG text (formats/README.md "Image
 * metadata", shared with the native `packer generate`): one `iTXt` chunk per key, in this order —
 * prompt, negative_prompt, seed, steps, guidance, scheduler, model, commit (only when known),
 * width, height, variant, Software — then `parameters`, the same values in the A1111/ComfyUI text
 * form that image tools read.
 *
 *   const png = await encodePng(image, imageMetadata(image.parameters));
 */
import { RUNTIME_VERSION } from "./generated/version.js";
import type { SchedulerName } from "./manifest.js";

/** What `Software` says for images made in the browser. */
export const SOFTWARE = `sdpack runtime-web ${RUNTIME_VERSION}`;

/** The values that made an image (defaults filled in), as `Pipeline.generate` returns them. */
export interface GenerationParameters {
  prompt: string;
  negativePrompt: string;
  /** The seed as a decimal string (the full 64-bit range). */
  seed: string;
  steps: number;
  guidance: number;
  /** As the CLI spells it: dpm++, euler, euler-a, ddim, pndm. */
  scheduler: SchedulerName;
  /** `ORG/NAME@VERSION`, from the manifest's model id and version. */
  model: string;
  /** The Hub commit the bundle was read at, when known. */
  commit?: string;
  width: number;
  height: number;
  /** The manifest target that ran, e.g. `webgpu-float32`. */
  variant: string;
  /** `sdpack runtime-web <version>`. */
  software: string;
}

/**
 * A float as Python's `repr` writes it (the shortest digits that read back as the same double;
 * `7.5`, `7.0`, `1e-05`, `1e+16`), so both runtimes write the same guidance for the same value.
 */
export function formatFloat(x: number): string {
  if (Number.isNaN(x)) return "nan";
  if (!Number.isFinite(x)) return x > 0 ? "inf" : "-inf";
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  const sign = x < 0 ? "-" : "";
  const [mantissa, exponent] = Math.abs(x).toExponential().split("e"); // the shortest round-tripping digits
  const digits = mantissa.replace(".", "");
  const exp = Number(exponent);
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    return `${sign}${m}e${exp < 0 ? "-" : "+"}${String(Math.abs(exp)).padStart(2, "0")}`;
  }
  if (exp < 0) return `${sign}0.${"0".repeat(-exp - 1)}${digits}`;
  if (exp >= digits.length - 1) return `${sign}${digits}${"0".repeat(exp - digits.length + 1)}.0`;
  return `${sign}${digits.slice(0, exp + 1)}.${digits.slice(exp + 1)}`;
}

/** The A1111/ComfyUI `parameters` text of an image. */
export function parametersText(p: GenerationParameters): string {
  return (
    `${p.prompt}\nNegative prompt: ${p.negativePrompt}\n` +
    `Steps: ${p.steps}, Sampler: ${p.scheduler}, CFG scale: ${formatFloat(p.guidance)}, Seed: ${p.seed}, ` +
    `Size: ${p.width}x${p.height}, Model: ${p.model}`
  );
}

/** The PNG text chunks of an image, keys and order as the spec gives them. */
export function imageMetadata(p: GenerationParameters): [string, string][] {
  const chunks: [string, string][] = [
    ["prompt", p.prompt],
    ["negative_prompt", p.negativePrompt],
    ["seed", p.seed],
    ["steps", String(p.steps)],
    ["guidance", formatFloat(p.guidance)],
    ["scheduler", p.scheduler],
    ["model", p.model],
  ];
  if (p.commit) chunks.push(["commit", p.commit]);
  chunks.push(["width", String(p.width)], ["height", String(p.height)], ["variant", p.variant], ["Software", p.software]);
  chunks.push(["parameters", parametersText(p)]);
  return chunks;
}
