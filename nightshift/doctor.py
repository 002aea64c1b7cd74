"""`nightshift doctor`: what will run tonight on this machine, checked before the queue is left to the night.

The GPU (VRAM, compute capability), which quantization modes and memory tiers work here, the encoders, Ollama
and its model, the models found per family, the disk against what the queue will write, which renderer each
queued job will get, and a tiny random-weight render per family through the real loading and generation path
(renderers/tiny_models.py; no download). A check that would stop tonight's queue is `blocking`: the report
says why and what to do, and the command exits non-zero.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from nightshift.agents.planner_ollama import normalize_host, ollama_version
from nightshift.config import Settings
from nightshift.errors import NightshiftError
from nightshift.jobs import JobStore
from nightshift.plan_files import load_plan_folder
from nightshift.records import shots_not_done
from nightshift.renderers import tiny_models
from nightshift.renderers.comfyui import DOWN as COMFYUI_DOWN, ComfyUIClient
from nightshift.renderers.comfyui_workflow import check_workflow, load_workflow, missing_models, model_files, shipped_workflow
from nightshift.renderers.encode import EncodeSettings, encode_frames
from nightshift.renderers.memory import check_quantization, tiers_for
from nightshift.renderers.registry import REGISTRY, model_entry
from nightshift.renderers.shots import choose_renderer, resolve_device
from nightshift.renderers.video import BackendOptions, backend_class
from nightshift.renderers.weights import resolve_weights, weights_present
from nightshift.schemas import QUANTIZATION_MODES, RenderSpec

DELIVERY_CODECS = ("libx264", "libx265")
NVENC = ("h264_nvenc", "hevc_nvenc")
TINY_BUILDERS: dict[str, Callable[[Path], Path]] = {"ltx": tiny_models.build_ltx, "ltx2": tiny_models.build_ltx2,
                                                    "wan": tiny_models.build_wan, "hunyuan": tiny_models.build_hunyuan}
# Delivered H.264 at CRF 18 runs ~40 Mbit/s at 3840x2160 for camera-like footage: bytes a second per pixel.
BYTES_PER_PIXEL_SECOND = 40e6 / 8 / (3840 * 2160)


@dataclass
class Check:
    section: str
    name: str
    ok: bool
    detail: str
    blocking: bool = False  # not ok and tonight's queue cannot run because of it
    fix: str = ""
    data: dict[str, object] = field(default_factory=dict)


@dataclass
class DoctorReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(c.blocking for c in self.checks)

    def add(self, *checks: Check) -> None:
        self.checks.extend(checks)

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks],
                "blocking": [f"{c.section}: {c.name}: {c.detail}" for c in self.checks if c.blocking]}

    def text(self) -> str:
        lines, section = [], None
        for check in self.checks:
            if check.section != section:
                section = check.section
                lines.append(f"\n{section}")
            mark = "ok  " if check.ok else ("STOP" if check.blocking else "--  ")
            lines.append(f"  {mark} {check.name}: {check.detail}" + (f"\n         -> {check.fix}" if check.fix and not check.ok else ""))
        verdict = ("Tonight's queue can run here." if self.ok else
                   "Tonight's queue cannot run here: " + "; ".join(f"{c.name}: {c.detail}" for c in self.checks if c.blocking))
        return "\n".join([*lines, "", verdict]).lstrip("\n")


def device_checks(settings: Settings) -> tuple[list[Check], str]:
    import torch

    checks = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            free, total = torch.cuda.mem_get_info(index)
            checks.append(Check("GPU", f"cuda:{index}", True,
                                f"{props.name}, {total / 2**30:.1f} GiB VRAM ({free / 2**30:.1f} free), compute capability "
                                f"{props.major}.{props.minor}, CUDA {torch.version.cuda}",
                                data={"name": props.name, "vram_gb": round(total / 2**30, 1),
                                      "free_gb": round(free / 2**30, 1), "capability": f"{props.major}.{props.minor}"}))
    else:
        checks.append(Check("GPU", "CUDA", False, f"no CUDA GPU (torch {torch.__version__}): video models run on the "
                            "CPU, minutes per frame at real sizes; `--renderer auto` renders the animatic",
                            fix="on a GPU machine: pip install -e '.[cuda,quant]' (the CUDA build of the same torch)"))
    device = resolve_device(settings.render.device)
    return checks, device


def quantization_checks(settings: Settings, device: str) -> list[Check]:
    import torch

    checks = []
    for mode in QUANTIZATION_MODES:
        try:
            check_quantization(mode, device, settings.render.gguf_file)
            if mode == "gguf" and importlib.util.find_spec("gguf") is None:
                raise NightshiftError("quantization gguf needs the gguf package", "pip install -e '.[quant]'")
            detail = {"none": "bf16 weights" if device.startswith("cuda") else "fp32/bf16 weights",
                      "fp8": "fp8 storage, cast per layer (any device)", "int8": "torchao int8 weight-only",
                      "nf4": "bitsandbytes NF4", "gguf": "a GGUF transformer file (render.gguf_file)"}[mode]
            if mode == "fp8" and device.startswith("cuda"):
                major, minor = torch.cuda.get_device_capability(torch.device(device))
                detail += "; fp8 compute kernels need compute capability 8.9+" + (" (have it)" if (major, minor) >= (8, 9)
                                                                                  else " (not here: storage only)")
            checks.append(Check("Quantization", mode, True, detail))
        except NightshiftError as error:
            if mode == "gguf" and "needs a GGUF file" in str(error):
                checks.append(Check("Quantization", mode, True, "available; set render.gguf_file to use it"))
                continue
            wanted = settings.render.quantization == mode
            checks.append(Check("Quantization", mode, False, str(error), blocking=wanted, fix=error.hint))
    checks.append(Check("Memory tiers", "available", True, ", ".join(tiers_for(device)),
                        data={"tiers": list(tiers_for(device))}))
    return checks


def encoder_checks(settings: Settings) -> list[Check]:
    """The delivery encoders through the path every shot takes (renderers/encode.py); NVENC, which PyAV's FFmpeg
    lists everywhere but only a driver makes usable, opened and fed two frames."""
    checks = []
    frames = [np.zeros((144, 256, 3), np.uint8)] * 2
    for name in DELIVERY_CODECS:
        try:
            with tempfile.TemporaryDirectory() as folder:
                encode_frames(iter(frames), Path(folder) / "probe.mp4", 24, EncodeSettings(codec=name, preset="ultrafast"))
            checks.append(Check("Encoders", name, True, "encodes here" + (" (render.codec)" if name == settings.render.codec
                                                                           else "")))
        except (av.FFmpegError, ValueError, OSError) as error:
            needed = name == settings.render.codec
            checks.append(Check("Encoders", name, False, f"not usable here ({str(error).splitlines()[0][:120]})",
                                blocking=needed, fix="set render.codec to libx264" if needed else ""))
    for name in NVENC:
        try:
            with tempfile.TemporaryDirectory() as folder, av.open(str(Path(folder) / "probe.mp4"), "w") as container:
                stream = container.add_stream(name, rate=Fraction(24))
                stream.width, stream.height, stream.pix_fmt = 256, 144, "yuv420p"
                for array in frames:
                    container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24").reformat(format="yuv420p")))
                container.mux(stream.encode())
            checks.append(Check("Encoders", name, True, "an NVIDIA encoder is usable here (Nightshift delivers with "
                                                        "libx264 or libx265)"))
        except (av.FFmpegError, ValueError, OSError):
            checks.append(Check("Encoders", name, False, "no NVIDIA encoder here (needs an NVIDIA driver with NVENC)"))
    return checks


def ollama_checks(settings: Settings) -> list[Check]:
    planner = settings.planner
    if planner.kind == "rules":
        return [Check("Planner", "rules", True, "planner.kind = rules: no Ollama needed")]
    host = normalize_host(planner.ollama_host)
    version = ollama_version(host)
    required = planner.kind == "ollama"
    if version is None:
        return [Check("Planner", "Ollama", False, f"no answer at {host}" + ("" if required else
                      "; the rules planner plans instead (and the shot list says so)"), blocking=required,
                      fix="start Ollama (`ollama serve`) or set planner.kind = rules")]
    import ollama

    try:
        ollama.Client(host=host, timeout=5).show(planner.model)
        pulled = Check("Planner", planner.model, True, "pulled")
    except (ollama.ResponseError, OSError) as error:
        pulled = Check("Planner", planner.model, False, f"not pulled ({error})", blocking=required,
                       fix=f"ollama pull {planner.model}")
    return [Check("Planner", "Ollama", True, f"version {version} at {host}"), pulled]


def comfyui_checks(settings: Settings) -> list[Check]:
    """Each configured ComfyUI server (when render.renderer = comfyui): reachable, its version, devices and VRAM,
    and whether it has every node type and model file tonight's workflow needs."""
    if settings.render.renderer != "comfyui":
        return []
    options = settings.render.comfyui
    checks = []
    for url in options.urls():
        client = ComfyUIClient(url, "nightshift-doctor")
        try:
            stats, info = client.system_stats(), client.object_info()
        except COMFYUI_DOWN as error:
            checks.append(Check("ComfyUI", url, False, f"no answer ({type(error).__name__})", blocking=True,
                                fix="start ComfyUI there (python main.py --listen ...) or fix render.comfyui.url"))
            continue
        devices = ", ".join(f"{d.get('name')} ({(d.get('vram_total') or 0) / 2**30:.1f} GiB, "
                            f"{(d.get('vram_free') or 0) / 2**30:.1f} free)" for d in stats.get("devices", []))
        version = stats.get("system", {}).get("comfyui_version", "unknown")
        checks.append(Check("ComfyUI", url, True, f"ComfyUI {version}, {len(info)} node types; {devices}",
                            data={"version": version, "devices": stats.get("devices", [])}))
        try:
            workflow = (load_workflow(options.workflow, options.mapping) if options.workflow and options.mapping
                        else shipped_workflow(settings.render.family))
        except NightshiftError as error:
            checks.append(Check("ComfyUI", "workflow", False, str(error), blocking=True, fix=error.hint))
            continue
        problems = check_workflow(workflow, info, url)
        missing = missing_models(workflow, info, url)
        checks.append(Check("ComfyUI", f"{workflow.path.name} nodes", not problems,
                            "every node type and input it uses is there" if not problems else "; ".join(problems),
                            blocking=bool(problems), fix=workflow.needs or "install the custom nodes it needs"))
        checks.append(Check("ComfyUI", f"{workflow.path.name} models", not missing,
                            (", ".join(model_files(workflow.graph)) or "no model files named") + " on the server"
                            if not missing else "; ".join(missing),
                            blocking=bool(missing), fix="put the files in ComfyUI's models/ folders"))
    return checks


def model_checks(settings: Settings) -> list[Check]:
    checks = []
    for family, entry in REGISTRY.items():
        ids = list(entry.known_ids)
        if settings.render.family == family and settings.render.model_id and settings.render.model_id not in ids:
            ids.insert(0, settings.render.model_id)
        found = []
        for model_id in ids:
            present, where = weights_present(model_id, settings.render.models_dir)
            if present:
                folder = resolve_weights(model_id, settings.render.models_dir).path
                size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
                found.append({"model_id": model_id, "path": str(folder), "gb": round(size / 1e9, 1)})
        detail = (", ".join(f"{m['model_id']} ({m['gb']} GB, {m['path']})" for m in found) if found else
                  f"none found in {settings.render.models_dir or 'render.models_dir (unset)'} or the Hugging Face cache")
        checks.append(Check("Models", family, bool(found), detail,
                            fix=f"hf download {entry.known_ids[0]}" if not found else "", data={"found": found}))
    return checks


def queue_checks(settings: Settings) -> list[Check]:
    """Which renderer each queued job gets, and whether the disk holds what the queue will write."""
    studio = settings.resolve(Path(".nightshift"))
    checks, seconds_left, pixels = [], 0.0, settings.render.output_width * settings.render.output_height
    output = settings.resolve(settings.paths.output)
    for job in JobStore(studio / "jobs").pending():
        folder = Path(job.work_folder)
        if job.redo is not None and not folder.is_dir():
            folder = output / job.redo.parent  # its folder is made from that delivery when it starts
        try:
            _, plan = load_plan_folder(folder)
            if job.redo is not None:
                plan.specs = [spec for spec in plan.specs if spec.shot_id in job.redo.shots]
        except (NightshiftError, OSError, ValueError):
            checks.append(Check("Queue", job.label, False, f"the plan folder {job.work_folder} cannot be read",
                                blocking=True, fix="run `nightshift queue` to see the job"))
            continue
        left = plan.specs if job.redo is not None and folder != Path(job.work_folder) else shots_not_done(folder, plan.specs)
        seconds_left += sum(spec.num_frames / spec.fps for spec in left)
        try:
            choice = choose_renderer(settings.render.renderer, plan, settings.render)
            checks.append(Check("Queue", job.label, True, f"{len(left)} shot{'' if len(left) == 1 else 's'} left: "
                                                          f"{choice.kind} ({choice.reason})"))
        except NightshiftError as error:
            checks.append(Check("Queue", job.label, False, str(error), blocking=True, fix=error.hint))
    probe = output if output.exists() else settings.project_dir
    free = shutil.disk_usage(probe).free
    needed = int(seconds_left * pixels * BYTES_PER_PIXEL_SECOND * 2.2)  # shots, the cut, the work copies
    enough = free >= needed
    checks.append(Check("Disk", str(output), enough,
                        f"{free / 1e9:.1f} GB free; the queue ({seconds_left:.0f} s of film left) needs about "
                        f"{needed / 1e9:.1f} GB", blocking=not enough, fix="free disk space or move paths.output",
                        data={"free_gb": round(free / 1e9, 1), "needed_gb": round(needed / 1e9, 1)}))
    return checks


def tiny_render_checks(device: str) -> list[Check]:
    """A few frames from each family's tiny random-weight pipeline, loaded from disk like a downloaded model."""
    checks = []
    for family in REGISTRY:
        builder = TINY_BUILDERS.get(family)
        if builder is None:
            checks.append(Check("Tiny renders", family, False, "no tiny random-weight pipeline of this family is "
                                "built yet, so its path is not exercised here"))
            continue
        started = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory(prefix=f"nightshift-doctor-{family}-") as folder:
                model = builder(Path(folder) / family)
                rules = model_entry(family).rules
                frames = rules.frame_count(0.5, 16)
                spec = RenderSpec(shot_id="s01-sh01", family=family, model_id=str(model), prompt="a woman walks",
                                  seed=1, width=32, height=32, fps=16, num_frames=frames, steps=2, guidance=1.0,
                                  duration_s=frames / 16)
                rendered = backend_class(family)(str(model), BackendOptions(device=device, quantization="none")).render(spec, [])
            shape = rendered.output.frames.shape
            checks.append(Check("Tiny renders", family, True, f"built, loaded and rendered {shape[0]} frames at "
                                f"{shape[2]}x{shape[1]} in {time.perf_counter() - started:.1f} s "
                                f"({rendered.output.pipeline}, {rendered.tier})",
                                data={"seconds": round(time.perf_counter() - started, 2), "frames": shape[0]}))
        except Exception as error:  # noqa: BLE001 - a broken install is what this check is for
            checks.append(Check("Tiny renders", family, False, f"{type(error).__name__}: {str(error)[:200]}",
                                blocking=True, fix="reinstall: bash scripts/setup.sh (or pip install -e '.[cuda,quant]')"))
    return checks


def run_doctor(settings: Settings, tiny_renders: bool = True) -> DoctorReport:
    report = DoctorReport()
    gpu, device = device_checks(settings)
    report.add(*gpu, *quantization_checks(settings, device), *encoder_checks(settings), *ollama_checks(settings),
               *model_checks(settings), *comfyui_checks(settings), *queue_checks(settings))
    if tiny_renders:
        report.add(*tiny_render_checks(device))
    return report
