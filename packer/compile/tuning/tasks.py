"""Make sdpack's shipped tuning databases: extract the kernels here, tune them on a GPU.

Two halves, because the machine that builds (here, no GPU) is not the one that measures:

``python -m packer.compile.tuning.tasks extract --checkpoint C --target cuda-sm90 --out DIR``
    runs the pipeline's steps 1–7 (:mod:`packer.compile.pipeline`) on each component of a
    checkpoint and writes every fused kernel MetaSchedule can tune to ``DIR/tasks.json`` (name,
    component, how often it runs, estimated FLOPs, the kernel as TVM JSON). The kernels are
    exactly the PrimFuncs that ``MetaScheduleApplyDatabase`` later looks up by structural hash.

``python -m packer.compile.tuning.tasks tune --tasks DIR/tasks.json --work-dir W ...``
    (on the GPU machine, with the full TVM compiler) tunes the heaviest tasks with
    MetaSchedule's tensor-core search space. The database in ``W`` grows across calls, so a
    time-limited session can tune in several runs.

``python -m packer.compile.tuning.tasks export --work-dir W --target cuda-sm90 --out DIR``
    keeps the best record per kernel and writes the two files :mod:`packer.compile.tuning`
    ships (records for another target are refused).

Tuning never changes what a kernel computes, only its schedule; the database's sha256 enters
the architecture signature, so libraries built with and without it never share a cache entry.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def extract(
    checkpoint: str,
    target_key: str,
    dtype: str,
    components,
    out: Path,
    image_size: int | None = None,
    tokenizer: Path | None = None,
    steps: int = 20,
) -> list[dict]:
    """Write ``out/tasks.json``: every tunable kernel of ``components`` for ``target_key``.

    Tasks are ranked by their share of one image of ``steps`` UNet steps (estimated FLOPs ×
    calls), heaviest first, which is the order :func:`tune` takes them in.
    """
    import tvm
    import tvm_ffi
    from tvm.s_tir.analysis import estimate_tir_flops

    from ...ingest import ingest
    from ..component import _default_latent_hw, _memo_loaders
    from ..targets import get_target

    spec = get_target(target_key)
    ckpt = ingest(checkpoint, tokenizer=tokenizer, image_size=image_size)
    loaders = _memo_loaders(ckpt)
    hw = tuple(int(x) for x in _default_latent_hw(ckpt, loaders["unet"]))
    target = spec.tvm_target()
    tasks: dict[int, dict] = {}
    for component in components:
        start = time.monotonic()
        fused = fused_module(component, loaders[component](), spec, dtype, hw)
        for task in tunable_tasks(fused, target):
            kernel = task.dispatched[0]
            key = tvm_ffi.structural_hash(kernel)
            entry = tasks.get(key)
            if entry is None:
                entry = tasks[key] = {
                    "name": task.task_name,
                    "components": {},
                    "weight": 0,
                    "flops": float(estimate_tir_flops(kernel)),
                    "mod": tvm.ir.save_json(kernel),
                }
            entry["weight"] += int(task.weight)
            entry["components"][component] = entry["components"].get(component, 0) + int(
                task.weight
            )
        print(
            f"{component}: exported and fused in {time.monotonic() - start:.0f} s", file=sys.stderr
        )
    # per-image cost: the UNet runs once per step, the other components once
    ranked = sorted(
        tasks.values(),
        key=lambda t: (
            -t["flops"] * sum(n * (steps if c == "unet" else 1) for c, n in t["components"].items())
        ),
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "tasks.json").write_text(
        json.dumps(
            {
                "target": target_key,
                "target_json": spec.target_json(),
                "dtype": dtype,
                "latent_hw": list(hw),
                "tvm": tvm.__version__,
                "tasks": ranked,
            }
        )
    )
    return ranked


def tunable_tasks(fused, target) -> list:
    """MetaSchedule's tasks for a fused module, minus the kernels that come scheduled (the
    hand-written fused attention): a build never looks those up, tuning them would be waste."""
    from tvm.s_tir import meta_schedule as ms

    return [
        task
        for task in ms.relax_integration.extract_tasks(fused, target)
        if not (task.mod["main"].attrs or {}).get("tirx.is_scheduled")
    ]


def fused_module(component: str, module, spec, dtype: str, latent_hw):
    """``module`` through pipeline steps 1–7: the fused kernels a build looks tuning up for."""
    import tvm

    from .. import pipeline
    from ..export import export_component

    exported = export_component(component, module, tuple(latent_hw))
    mod = pipeline.prepare_for(exported.mod, dtype, spec)
    with spec.tvm_target():
        return tvm.transform.Sequential(pipeline.fusion_passes())(mod)


def tune(
    tasks_path: Path,
    work_dir: Path,
    *,
    first: int,
    count: int,
    trials: int,
    builders: int,
    seed: int = 0,
    cost_model: str = "random",
    strategy: str = "replay-trace",
    seconds: float | None = None,
    pick: list[int] | None = None,
) -> None:
    """Tune tasks ``first .. first+count`` of ``tasks.json`` (heaviest first) into ``work_dir``
    (or the task numbers in ``pick``, in that order: e.g. by a profile's kernel times).

    CUDA targets search MetaSchedule's tensor-core space (wmma / mma for fp16 conv2d and
    matmul, plain multi-level tiling where no intrinsic applies); other targets its default.

    One ``tune_tasks`` call per kernel: MetaSchedule's task scheduler commits a task's
    measurements to the database only when it returns to that task or finishes, so a run
    stopped half way through several tasks keeps nothing (seen on the lent GPU). With
    ``seconds``, no kernel is started that the slowest kernel so far says would not finish in
    time; the database then holds every kernel tuned so far.
    """
    import faulthandler
    import logging

    import tvm
    from tvm.s_tir import meta_schedule as ms

    from ..schedule_rules import load_tensor_intrinsics
    from ..targets import get_target

    load_tensor_intrinsics()  # registers the wmma / mma intrinsics
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    faulthandler.dump_traceback_later(300, repeat=True)  # where a long run hangs, if it does
    doc = json.loads(tasks_path.read_text())
    spec = get_target(doc["target"])
    target = spec.tvm_target()
    if spec.device == "cpu":  # CPU search spaces need the core count (ignored when applying)
        import os

        target = tvm.target.Target(
            {**spec.target_json(), "num-cores": os.cpu_count()}, host=target.host
        )
    rules = "cuda-tensorcore" if spec.device == "cuda" else "from-target"
    work_dir.mkdir(parents=True, exist_ok=True)
    database = ms.database.JSONDatabase(
        str(work_dir / "database_workload.json"), str(work_dir / "database_tuning_record.json")
    )
    start = time.monotonic()
    slowest = 0.0
    done = 0
    numbers = pick if pick is not None else range(first, min(first + count, len(doc["tasks"])))
    for number in numbers:
        task = doc["tasks"][number]
        elapsed = time.monotonic() - start
        if seconds is not None and elapsed + slowest > seconds:
            print(
                f"stopping before task {number}: {elapsed:.0f} s used, the slowest kernel "
                f"took {slowest:.0f} s of the {seconds:.0f} s allowed",
                flush=True,
            )
            break
        print(
            f"task {number}: {task['name']} ×{task['weight']} {task['flops'] / 1e9:.2f} GFLOP",
            flush=True,
        )
        context = ms.TuneContext(
            mod=tvm.ir.load_json(task["mod"]),
            target=target,
            space_generator=ms.space_generator.PostOrderApply(
                sch_rules=rules, postprocs=rules, mutator_probs=rules
            ),
            search_strategy=strategy,
            task_name=f"{number:03d}-{task['name']}",
            rand_state=seed + number,
            num_threads=builders,
        )
        ms.tune.tune_tasks(
            tasks=[context],
            task_weights=[float(task["weight"])],
            work_dir=str(work_dir / "logs"),
            max_trials_global=trials,
            max_trials_per_task=trials,
            num_trials_per_iter=min(64, trials),
            builder=ms.builder.LocalBuilder(max_workers=builders, timeout_sec=120),
            runner=ms.runner.LocalRunner(
                evaluator_config=ms.runner.EvaluatorConfig(
                    number=3, repeat=1, min_repeat_ms=50, enable_cpu_cache_flush=False
                )
            ),
            database=database,
            cost_model=cost_model,
        )
        slowest = max(slowest, time.monotonic() - start - elapsed)
        done += 1
    faulthandler.cancel_dump_traceback_later()
    print(f"tuned {done} tasks in {time.monotonic() - start:.0f} s", flush=True)
    report(tasks_path, work_dir)


def best_records(*work_dirs: Path) -> dict[str, tuple[list, float]]:
    """The fastest successful record per workload over ``work_dirs``: ``{workload: (record, s)}``.

    A workload line is the kernel's structural hash and its TVM JSON, so databases from
    several tuning sessions (machines) merge by that line.
    """
    best: dict[str, tuple[list, float]] = {}
    for work_dir in work_dirs:
        workloads = [
            line
            for line in (work_dir / "database_workload.json").read_text().splitlines()
            if line.strip()
        ]
        for line in (work_dir / "database_tuning_record.json").read_text().splitlines():
            if not line.strip():
                continue
            index, record = json.loads(line)
            run_secs = [float(s) for s in (record[1] or []) if s is not None]
            if not run_secs or min(run_secs) >= 1e9:
                continue  # failed build or run
            seconds = sum(run_secs) / len(run_secs)
            workload = workloads[index]
            if workload not in best or seconds < best[workload][1]:
                best[workload] = (record, seconds)
    return best


def report(tasks_path: Path, work_dir: Path) -> None:
    """Print the best time per tuned kernel (and its TFLOP/s when FLOPs are known)."""
    import tvm
    import tvm_ffi
    from tvm.s_tir import meta_schedule as ms

    from ..schedule_rules import load_tensor_intrinsics

    load_tensor_intrinsics()  # records name the wmma / mma intrinsics
    tasks = json.loads(tasks_path.read_text())["tasks"]
    kernels = [tvm.ir.load_json(task["mod"]) for task in tasks]
    database = ms.database.JSONDatabase(
        str(work_dir / "database_workload.json"), str(work_dir / "database_tuning_record.json")
    )
    for workload in {
        tvm_ffi.structural_hash(r.workload.mod): r.workload
        for r in database.get_all_tuning_records()
    }.values():
        top = database.get_top_k(workload, 1)
        if not top or not top[0].run_secs:
            continue
        seconds = sum(float(s) for s in top[0].run_secs) / len(top[0].run_secs)
        found = [i for i, k in enumerate(kernels) if tvm_ffi.structural_equal(k, workload.mod)]
        task = tasks[found[0]] if found else None
        label = f"{found[0]:3d} {task['name']} x{task['weight']}" if task else "unknown kernel"
        rate = f" {task['flops'] / seconds / 1e12:6.1f} TFLOP/s" if task and task["flops"] else ""
        print(
            f"best {seconds * 1e6:9.1f} us x{task['weight'] if task else 1} "
            f"= {seconds * 1e3 * (task['weight'] if task else 1):7.2f} ms{rate}  {label}",
            flush=True,
        )


def export(
    work_dirs: list[Path],
    target_key: str,
    out: Path,
    tasks_path: Path | None = None,
    only: set[int] | None = None,
) -> int:
    """Write the best record per kernel as a shippable database for ``target_key``.

    With ``only`` (task numbers of ``tasks_path``), kernels outside it are left out: a tuned
    schedule that lost to dlight's untuned one in the profile must not ship.
    """
    import tvm
    import tvm_ffi

    from ..schedule_rules import load_tensor_intrinsics
    from ..targets import get_target
    from . import RECORDS, WORKLOAD, _comparable

    load_tensor_intrinsics()  # records name the wmma / mma intrinsics
    want = _comparable(get_target(target_key).target_json())
    best = best_records(*work_dirs)
    if only is not None:
        from tvm.s_tir import meta_schedule as ms

        tasks = json.loads(tasks_path.read_text())["tasks"]
        keep = [tvm.ir.load_json(tasks[i]["mod"]) for i in sorted(only)]
        chosen = {}
        for workload, value in best.items():
            mod = ms.database.Workload.from_json(json.loads(workload)).mod
            if any(tvm_ffi.structural_equal(mod, k) for k in keep):
                chosen[workload] = value
        best = chosen
    out.mkdir(parents=True, exist_ok=True)
    workload_lines, record_lines = [], []
    for index, (workload, (record, _)) in enumerate(sorted(best.items())):
        if _comparable(record[2]) != want:
            raise SystemExit(f"a record was tuned for another target: {record[2]}")
        workload_lines.append(workload)
        record_lines.append(json.dumps([index, record], separators=(",", ":")))
    (out / WORKLOAD).write_text("".join(line + "\n" for line in workload_lines))
    (out / RECORDS).write_text("".join(line + "\n" for line in record_lines))
    return len(record_lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m packer.compile.tuning.tasks")
    sub = parser.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("extract")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--target", default="cuda-sm90")
    p.add_argument("--dtype", default="float16")
    p.add_argument("--components", default="unet,vae_decoder")
    p.add_argument("--image-size", type=int)
    p.add_argument("--tokenizer", type=Path, help="for single files (the tokenizer is not used)")
    p.add_argument("--steps", type=int, default=20, help="UNet calls per image, for ranking")
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("tune")
    p.add_argument("--tasks", type=Path, required=True)
    p.add_argument("--work-dir", type=Path, required=True)
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--count", type=int, default=8)
    p.add_argument("--trials", type=int, default=64)
    p.add_argument("--builders", type=int, default=16)
    p.add_argument("--cost-model", default="random")
    p.add_argument("--strategy", default="replay-trace", help="or evolutionary")
    p.add_argument("--seconds", type=float, help="start no kernel that would end after this")
    p.add_argument("--pick", help="comma-separated task numbers, instead of --first/--count")
    p = sub.add_parser("report")
    p.add_argument("--tasks", type=Path, required=True)
    p.add_argument("--work-dir", type=Path, required=True)
    p = sub.add_parser("export")
    p.add_argument("--work-dir", type=Path, required=True, action="append")
    p.add_argument("--tasks", type=Path, help="with --only")
    p.add_argument("--only", help="comma-separated task numbers to keep")
    p.add_argument("--target", default="cuda-sm90")
    p.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.verb == "extract":
        ranked = extract(
            args.checkpoint,
            args.target,
            args.dtype,
            args.components.split(","),
            args.out,
            args.image_size,
            args.tokenizer,
            args.steps,
        )
        for number, task in enumerate(ranked):
            print(
                f"{number:3d} {task['name']:60s} ×{task['weight']:3d} "
                f"{task['flops'] / 1e9:9.2f} GFLOP {task['components']}"
            )
    elif args.verb == "tune":
        tune(
            args.tasks,
            args.work_dir,
            first=args.first,
            count=args.count,
            trials=args.trials,
            builders=args.builders,
            cost_model=args.cost_model,
            strategy=args.strategy,
            seconds=args.seconds,
            pick=[int(x) for x in args.pick.split(",")] if args.pick else None,
        )
    elif args.verb == "report":
        report(args.tasks, args.work_dir)
    else:
        only = {int(x) for x in args.only.split(",")} if args.only else None
        count = export(args.work_dir, args.target, args.out, args.tasks, only)
        print(f"{count} records written to {args.out}")


if __name__ == "__main__":
    main()
