"""Settings from nightshift.toml and NIGHTSHIFT_* environment variables.

Precedence, highest first: arguments passed in code, NIGHTSHIFT_* variables
(nested with a double underscore, e.g. NIGHTSHIFT_PLANNER__MODEL), nightshift.toml,
the defaults below. OLLAMA_HOST is honoured as Ollama's own clients do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from nightshift.errors import NightshiftError
from nightshift.schemas import MemoryTier, ModelFamily, QuantizationMode

CONFIG_FILE_NAME = "nightshift.toml"
SYSTEM_FOLDERS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/sbin", "/sys", "/usr", "/var/lib",
                  "/var/log", "/run")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _default_ollama_host() -> str:
    return os.environ.get("OLLAMA_HOST", "http://127.0.0.1:11434")


class PlannerSettings(_Section):
    kind: Literal["auto", "ollama", "rules"] = "auto"
    model: str = "qwen3:4b"
    ollama_host: str = Field(default_factory=_default_ollama_host)
    timeout_s: float = Field(120.0, gt=0, description="Per request; a scene that takes longer fails.")
    max_repairs: int = Field(2, ge=0, le=10, description="Times a malformed answer is sent back with its error.")
    seed: int = 42
    temperature: float = 0.0
    num_ctx: int = 8192
    max_shots_per_scene: int = Field(24, ge=1)
    on_failure: Literal["fallback", "fail"] = Field(
        "fallback", description="After repairs run out for a scene: plan it with the rules planner (noted), or stop."
    )
    cache_dir: Path | None = Field(None, description="Default: <project>/.nightshift/cache/planner")


class PacingSettings(_Section):
    dialogue_words_per_minute: float = Field(150.0, gt=0)
    action_words_per_minute: float = Field(110.0, gt=0)
    establishing_s: float = Field(4.0, gt=0)
    min_shot_s: float = Field(2.0, gt=0)
    max_shot_s: float = Field(8.0, gt=0)


COMFYUI_FIELDS = ("prompt", "negative_prompt", "seed", "width", "height", "frames", "fps", "steps", "first_keyframe",
                  "last_keyframe", "lora_name", "lora_strength")
NodeInput = Annotated[str, StringConstraints(pattern=r"^[^.\s]+\.[A-Za-z0-9_]+$")]  # "<node id>.<input name>"
Targets = NodeInput | list[NodeInput] | None  # one input, or several that take the same value


class ComfyUIMapping(_Section):
    """Which node input of an API-format workflow takes which field of a shot's RenderSpec, as "<node id>.<input>",
    and which node's output is the shot. Checked against the server's /object_info before the night."""

    output: str = Field(min_length=1, max_length=200, description="The id of the node whose output is the shot "
                                                                  "(SaveVideo, SaveWEBM, SaveAnimatedWEBP or SaveImage).")
    prompt: Targets = Field(None)
    negative_prompt: Targets = Field(None)
    seed: Targets = Field(None)
    width: Targets = Field(None)
    height: Targets = Field(None)
    frames: Targets = Field(None)
    fps: Targets = Field(None)
    steps: Targets = Field(None)
    first_keyframe: Targets = Field(None, description="A LoadImage input: the uploaded first frame.")
    last_keyframe: Targets = Field(None)
    lora_name: Targets = Field(None, description="The first character LoRA's file name.")
    lora_strength: Targets = Field(None)

    def targets(self) -> dict[str, list[tuple[str, str]]]:
        """field -> [(node id, input name) ...], for the fields this workflow takes."""
        found = {}
        for name in COMFYUI_FIELDS:
            value = getattr(self, name)
            if value is not None:
                found[name] = [tuple(item.split(".", 1)) for item in ([value] if isinstance(value, str) else value)]
        return found


class ComfyUISettings(_Section):
    url: str | list[str] = Field("http://127.0.0.1:8188", description="Your ComfyUI server, or a list: one render "
                                                                       "slot per server, shots rendering on all at once.")
    workflow: Path | None = Field(None, description="A workflow you exported with \"Save (API)\"; empty: the one "
                                                    "shipped for the shot's model family.")
    mapping: ComfyUIMapping | None = Field(None, description="Required with `workflow`: a [render.comfyui.mapping] "
                                                             "table saying where each shot field goes (README).")
    reconnect_s: float = Field(120.0, ge=0, le=86400, description="How long a shot waits for a server that is down "
                               "or restarting; then the job stays queued and the queue waits for the server, trying "
                               "again with a backoff (up to 5 min), all night if need be.")

    @model_validator(mode="after")
    def _mapping_with_workflow(self) -> ComfyUISettings:
        if self.workflow is not None and self.mapping is None:
            raise ValueError("render.comfyui.workflow needs render.comfyui.mapping: say which node input takes the "
                             "prompt, seed, size, frames ... and which node's output is the shot (README)")
        return self

    def urls(self) -> list[str]:
        return [self.url] if isinstance(self.url, str) else list(self.url)


class DraftSettings(_Section):
    """The draft rung: the same family and prompt at a lower cost. Empty fields take the family's defaults
    (nightshift/families.py)."""

    steps: int | None = Field(None, ge=1, le=500, description="Denoising steps of a draft (default: the family's).")
    scale: float | None = Field(None, gt=0, le=1, description="A draft's size as a fraction of the final's (snapped to "
                                                              "the family's multiples; default: the family's).")
    upscale_scaler: Literal["bilinear", "bicubic", "lanczos"] = Field(
        "bilinear", description="The 4K fit of a draft (no super-resolution model): cheap, the same delivery size.")
    animatic: bool = Field(False, description="Give animatic renders (no GPU) a draft rung too: smaller cards, the "
                                              "cheap fit; a way to try the ladder on a CPU.")


class RenderDefaults(_Section):
    family: ModelFamily = "ltx"
    model_id: str | None = Field(None, description="Default: the family's registry default.")
    width: int | None = Field(None, ge=16, le=8192)
    height: int | None = Field(None, ge=16, le=8192)
    fps: float | None = Field(None, gt=0, le=120)
    steps: int | None = Field(None, ge=1, le=500)
    guidance: float | None = Field(None, ge=0, le=50)
    quantization: QuantizationMode | Literal["auto"] = "auto"
    seed: int = 1234
    renderer: Literal["auto", "diffusers", "animatic", "comfyui"] = Field(
        "auto", description="auto: diffusers when CUDA and the plan's weights are present, else the animatic; "
                            "comfyui: your ComfyUI server (render.comfyui)."
    )
    comfyui: ComfyUISettings = Field(default_factory=ComfyUISettings)
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    tier: MemoryTier | Literal["auto"] = "auto"
    cache: Literal["none", "first_block", "taylorseer"] = Field(
        "none", description="A diffusers step cache (FirstBlockCache, TaylorSeer): faster, not bit-exact; off until "
                            "measured on your GPU (renderers/speed.py, BENCHMARKS.md).")
    cache_threshold: float = Field(0.05, gt=0, le=1, description="FirstBlockCache: how little the first block's "
                                                                 "output may change for a step to be skipped.")
    compile_blocks: bool = Field(False, description="torch.compile the transformer's repeated block "
                                                    "(compile_repeated_blocks): slower start, faster steps.")
    attention_backend: str = Field("native", description="diffusers attention backend: native (PyTorch SDPA), "
                                                         "flash, sage, xformers ... (their package, a GPU).")
    gguf_file: Path | None = Field(None, description="A GGUF file for the transformer (quantization = gguf).")
    models_dir: Path | None = Field(None, description="A folder of diffusers models (<org>/<name>), searched before the HF cache.")
    keyframe_model: str | None = Field(
        None, description="A local text-to-image model for first/last frames (e.g. black-forest-labs/FLUX.1-schnell)."
    )
    ltx_latent_upsampler: str | None = Field(
        None, description="LTX-Video only: a spatial latent upsampler (e.g. Lightricks/ltxv-spatial-upscaler-0.9.7): "
        "render at half size, upsample the latents 2x, refine at full size.")
    keyframe_steps: int = Field(4, ge=1, le=200)
    keyframe_guidance: float = Field(0.0, ge=0, le=50)
    output_width: int = Field(3840, ge=16, le=7680, multiple_of=2, description="Delivered clip width (4K UHD by default).")
    output_height: int = Field(2160, ge=16, le=4320, multiple_of=2, description="Delivered clip height.")
    upscale_fit: Literal["pad", "crop"] = "pad"
    upscale_scaler: Literal["bilinear", "bicubic", "lanczos"] = Field("lanczos", description="The 4K fit's scaler.")
    draft: DraftSettings = Field(default_factory=DraftSettings)
    upscale_sharpen: float = Field(0.0, ge=0, le=1, description="FFmpeg cas strength after the 4K scale.")
    upscale_model: Path | None = Field(
        None, description="A local super-resolution weights file (.pth/.safetensors, loaded with spandrel) run before "
        "the 4K fit on diffusers renders; empty: FFmpeg lanczos only.")
    upscale_tile: int = Field(512, ge=64, le=4096, description="Tile size in pixels for the super-resolution model.")
    codec: Literal["libx264", "libx265"] = "libx264"
    crf: int = Field(18, ge=0, le=51)
    preset: str = "veryfast"
    keyframe_interval_s: float = Field(1.0, ge=0.1, le=10, description="Seconds between keyframes in every "
                                       "delivered MP4 (editing suites scrub and cut on keyframes).")
    style: str = Field(
        "cinematic, natural film grain, motivated lighting, shallow depth of field",
        description="The style bible: appended to every shot prompt.",
    )


class PathSettings(_Section):
    inbox: Path = Path("inbox")
    output: Path = Path("output")
    templates: Path | None = Field(None, description="A folder of templates that override the built-in ones.")


class IntakeSettings(_Section):
    max_script_mb: float = Field(10.0, gt=0, description="Larger files are refused: feature scripts are ~0.3 MB.")
    max_scenes: int = Field(2000, ge=1)


CLOCK = r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?$"  # 00:00 .. 23:59 (seconds optional: 06:59:30)


class NightSettings(_Section):
    window_start: str = Field("01:00", pattern=CLOCK, description="Local time the render window opens (HH:MM, 00:00-23:59).")
    window_end: str = Field("07:00", pattern=CLOCK, description="Local time it closes; unfinished work waits for the next night.")
    shot_timeout_s: float = Field(3600.0, gt=0, description="A shot rendering longer is killed and retried (counted "
                                  "from when the render process takes it: the process's start-up is not counted).")
    shot_retries: int = Field(1, ge=0, le=5, description="Retries of a failed or timed-out shot before it is reported.")
    stable_s: float = Field(10.0, ge=0, le=3600, description="A dropped file is taken once its size and time have "
                            "not changed for this long (and no process has it open for writing).")
    poll_s: float = Field(1.0, gt=0, le=600, description="How often the inbox and the queue are checked.")
    lease_ttl_s: float = Field(60.0, ge=5, le=3600, description="A machine sharing the studio that stops renewing "
                               "its leases for this long is taken to be gone and its shots are rendered by another. "
                               "Keep the machines' clocks in step (NTP) to well within this.")
    strategy: Literal["progressive", "in_order"] = Field(
        "progressive", description="progressive: every shot due tonight gets its draft before any shot gets its "
        "final, so the cut is whole at dawn; in_order: each job's shots at final, one job after another.")
    rungs: list[Literal["animatic", "draft", "final"]] = Field(
        default_factory=lambda: ["draft", "final"], description="The quality ladder a progressive night climbs, "
        "cheapest first; it ends with final. The animatic renderer (no GPU) has one rung unless render.draft.animatic.")
    grace_s: float = Field(300.0, ge=0, le=86400, description="A shot still rendering when the window closes "
                           "finishes if it is predicted to within this; else it is stopped and resumes next night.")
    cut_every_s: float = Field(300.0, ge=0, le=86400, description="A progressive night brings a job's cut up to "
                               "date as finals land, at most this often (and always at its end and the window's).")

    @field_validator("rungs")
    @classmethod
    def _ladder(cls, value: list[str]) -> list[str]:
        order = ["animatic", "draft", "final"]
        if not value or value[-1] != "final" or value != sorted(set(value), key=order.index):
            raise ValueError("night.rungs climbs cheapest first and ends with final, e.g. [\"draft\", \"final\"]")
        return value


class SigningSettings(_Section):
    enabled: bool = Field(True, description="Sign every delivered MP4 with C2PA Content Credentials.")
    cert_chain: Path | None = Field(
        None, description="Your ES256 signing certificate with its issuers (PEM). Default: the project's local one "
        "in .nightshift/signing/, made by `nightshift init` or the first delivery.")
    private_key: Path | None = Field(None, description="The private key for cert_chain (PEM).")
    tsa_url: str | None = Field(None, description="An RFC 3161 time-stamp server; none by default (nothing leaves the machine).")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="NIGHTSHIFT_", env_nested_delimiter="__", extra="forbid", toml_file=None
    )

    project_dir: Path = Path(".")
    planner: PlannerSettings = Field(default_factory=PlannerSettings)
    pacing: PacingSettings = Field(default_factory=PacingSettings)
    render: RenderDefaults = Field(default_factory=RenderDefaults)
    paths: PathSettings = Field(default_factory=PathSettings)
    intake: IntakeSettings = Field(default_factory=IntakeSettings)
    night: NightSettings = Field(default_factory=NightSettings)
    signing: SigningSettings = Field(default_factory=SigningSettings)

    @field_validator("project_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # toml_file in model_config is set per load by load_settings (a subclass), never globally.
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @model_validator(mode="after")
    def _studio_paths(self) -> Settings:
        """The inbox and output roots must be folders a studio may own, never / or a system folder."""
        for name in ("inbox", "output"):
            resolved = self.resolve(getattr(self.paths, name)).resolve()
            if resolved == Path("/") or any(
                    resolved == Path(root) or resolved.is_relative_to(root) for root in SYSTEM_FOLDERS):
                raise ValueError(f"paths.{name} = {str(getattr(self.paths, name))!r} resolves to {resolved}, a system "
                                 "folder: Nightshift would write its files there. Use a folder of the project "
                                 f"(the default is {name}/)")
        return self

    def resolve(self, path: Path) -> Path:
        """A configured path, relative to the project folder unless absolute."""
        path = path.expanduser()
        return path if path.is_absolute() else self.project_dir / path

    @property
    def planner_cache_dir(self) -> Path:
        return self.resolve(self.planner.cache_dir or Path(".nightshift/cache/planner"))

    @property
    def cut_runs_dir(self) -> Path:
        """Encoded transition runs, shared by every cut of the studio and found again by their inputs."""
        return self.resolve(Path(".nightshift/cache/cut-runs"))

    @property
    def templates_override_dir(self) -> Path | None:
        return self.resolve(self.paths.templates) if self.paths.templates else None


class ConfigError(NightshiftError):
    """A nightshift.toml (or NIGHTSHIFT_* variable) that does not validate: each problem names its setting."""

    def __init__(self, path: Path, error: ValidationError | None, text: str = "") -> None:
        if error is not None:
            problems = [f"  {'.'.join(str(p) for p in e['loc'])} = {e.get('input')!r}: {e['msg']}"
                        for e in error.errors()[:20]]
            text = "\n".join(problems)
        super().__init__(f"{path}: invalid configuration:\n{text}",
                         "fix the setting in the file (or the NIGHTSHIFT_* variable of the same name); "
                         "`nightshift init` writes a commented example")


def find_config_file() -> Path | None:
    """NIGHTSHIFT_CONFIG, else ./nightshift.toml when present."""
    env = os.environ.get("NIGHTSHIFT_CONFIG")
    if env:
        return Path(env)
    candidate = Path.cwd() / CONFIG_FILE_NAME
    return candidate if candidate.is_file() else None


def load_settings(config_path: Path | None = None, **overrides: object) -> Settings:
    """Load settings; `config_path` names a nightshift.toml (its folder becomes the project folder)."""
    toml = config_path or find_config_file()
    if toml is None:
        return Settings(**overrides)  # type: ignore[arg-type]
    if not toml.is_file():
        raise FileNotFoundError(f"{toml}: no such config file (create one with `nightshift init`)")
    overrides.setdefault("project_dir", toml.resolve().parent)

    class _SettingsFromFile(Settings):
        model_config = SettingsConfigDict(**{**Settings.model_config, "toml_file": toml})

    try:
        return _SettingsFromFile(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise ConfigError(toml, error) from None
    except ValueError as error:
        raise ConfigError(toml, None, str(error)) from None
