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
import type { SchedulerName } from "./formats.js";

/** What `Software` says for images made in the browser. */
export const SOFTWARE = `sdpack runtime-web ${RUNTIME_VERSION}`;

/**
 * A number as the spec writes it (ECMAScript's `Number.prototype.toString`: the shortest decimal
 * that reads back as the same float64 — `7.5`, `7`, `0.1`, `1e-7`), which `packer generate` writes
 * the same way.
 */
export function numberText(x: number): string {
  return String(x);
}

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

/** The A1111/ComfyUI `parameters` text of an image. */
export function parametersText(p: GenerationParameters): string {
  return (
    `${p.prompt}\nNegative prompt: ${p.negativePrompt}\n` +
    `Steps: ${p.steps}, Sampler: ${p.scheduler}, CFG scale: ${numberText(p.guidance)}, Seed: ${p.seed}, ` +
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
    ["guidance", numberText(p.guidance)],
    ["scheduler", p.scheduler],
    ["model", p.model],
  ];
  if (p.commit) chunks.push(["commit", p.commit]);
  chunks.push(
    ["width", String(p.width)],
    ["height", String(p.height)],
    ["variant", p.variant],
    ["Software", p.software],
  );
  chunks.push(["parameters", parametersText(p)]);
  return chunks;
}
