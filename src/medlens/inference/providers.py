"""Which ONNX Runtime execution provider runs a model, and which graph of a 3D model suits it.

On x86-64 Linux medlens installs ONNX Runtime's OpenVINO build (`onnxruntime-openvino`), which
keeps the CPU provider and adds OpenVINO's. Its CPU plugin has direct (oneDNN) 3D convolutions,
so 3D models run on it as plain Conv3d graphs: CompactNet 3D at batch 32 took 2.1 ms per volume
there against 3.4 / 4.7 ms on the CPU provider (Conv3d unrolled to 2D / plain) and 3.0 ms in
torch eager (`benchmarks/bench_inference_latency.py`). Which of the two runs a 2D model faster
varies with the model and the machine, so the engine times both when it first loads one
(:mod:`medlens.inference.autotune`); the CPU provider is the default. A CUDA provider, when
present, wins.

bfloat16 (``precision="bf16"``) runs every model on OpenVINO's provider with its CPU plugin's
inference-precision hint, on CPUs that compute bfloat16 natively (AVX512-BF16 or AMX); the
graph stays float32 and OpenVINO converts it when it compiles the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from medlens.errors import ConfigError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
OPENVINO = "OpenVINOExecutionProvider"


@dataclass(frozen=True)
class Runtime:
    """Providers (in priority order) with their options, and the 3D graph to export for them."""

    providers: tuple[str, ...]
    options: tuple[dict[str, str], ...] = field(default=())
    unroll_3d: bool = True

    @property
    def name(self) -> str:
        return {CUDA: "cuda", OPENVINO: "openvino"}.get(self.providers[0], "cpu")

    def session(self, path: str, threads: int | None = None) -> object:
        """An InferenceSession for ``path``; ``threads`` caps the provider's compute threads."""
        import onnxruntime as ort

        session_options = ort.SessionOptions()
        if threads:
            session_options.intra_op_num_threads = threads
        # idle worker threads sleep instead of spinning: a service shares the cores with its
        # event loop, decoders and (in benchmarks) its clients
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options = [dict(o) for o in self.options] or [{} for _ in self.providers]
        if threads and self.providers[0] == OPENVINO:
            options[0]["num_of_threads"] = str(threads)
        return ort.InferenceSession(
            path, session_options, providers=list(self.providers), provider_options=options
        )


def available() -> list[str]:
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def runtime_for(
    spatial_dims: int, *, openvino: bool | None = None, precision: str = "fp32"
) -> Runtime:
    """The runtime for a model with ``spatial_dims`` spatial axes on this machine.

    ``openvino`` forces OpenVINO on (if installed) or off; by default it runs 3D models.
    ``precision="bf16"`` is OpenVINO's CPU plugin in bfloat16, or a ConfigError saying why not."""
    have = available()
    if precision == "bf16":
        return _bf16_runtime(have)
    if CUDA in have:
        return Runtime((CUDA, CPU))
    use_openvino = spatial_dims == 3 if openvino is None else openvino
    if use_openvino and OPENVINO in have:
        return openvino_runtime()
    return Runtime((CPU,))


#: what `--provider` may name; "auto" times the candidates (:mod:`medlens.inference.autotune`)
PROVIDER_NAMES = ("auto", "cpu", "openvino", "cuda")


def fp32_candidates(spatial_dims: int, provider: str = "auto") -> list[Runtime]:
    """The runtimes a float32 model may run on, the default first: the one ``provider`` names,
    or for "auto" the default and, for a 2D model on a CPU with OpenVINO's provider installed,
    OpenVINO's (which is faster depends on the model and the machine). 3D models are not timed:
    their OpenVINO graph is plain Conv3d, the CPU provider's another export (unrolled), and it
    lost by 1.5-2x in every benchmark run."""
    if provider not in PROVIDER_NAMES:
        raise ConfigError(f"unknown provider {provider!r}; use one of {list(PROVIDER_NAMES)}")
    have = available()
    if provider == "auto":
        default = runtime_for(spatial_dims)
        if default.name == "cpu" and OPENVINO in have:
            return [default, openvino_runtime()]
        return [default]
    wanted = {"cpu": CPU, "openvino": OPENVINO, "cuda": CUDA}[provider]
    if wanted not in have:
        raise ConfigError(
            f"ONNX Runtime here has no {provider} provider (it has {', '.join(have) or 'none'})",
            fix="use --provider auto",
        )
    if provider == "openvino":
        return [openvino_runtime()]
    return [Runtime((wanted, CPU) if wanted == CUDA else (CPU,))]


def openvino_runtime(bf16: bool = False) -> Runtime:
    """OpenVINO's CPU plugin (plain Conv3d graphs) in float32, or bfloat16 when asked. The hint
    is explicit both ways: on CPUs with AMX the plugin's own default is bfloat16.

    Its threads are not pinned to cores: the plugin pins each process's threads from the first
    core, so the one-thread sessions of `medlens serve --workers 2` shared one core (ResNet-18
    bf16: 29 images/s per worker with two running, 58 alone; 58 each unpinned; one process on
    both cores was as fast either way, 113-116)."""
    config = {"INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32", "ENABLE_CPU_PINNING": "NO"}
    options = {"device_type": "CPU", "load_config": json.dumps({"CPU": config})}
    return Runtime((OPENVINO, CPU), (options, {}), unroll_3d=False)


def bf16_available() -> bool:
    """Whether ``precision="bf16"`` can run here."""
    try:
        _bf16_runtime(available())
    except ConfigError:
        return False
    return True


def _bf16_runtime(have: list[str]) -> Runtime:
    from medlens.models.precision import native_bf16

    if OPENVINO not in have:
        raise ConfigError(
            "bf16 inference runs on ONNX Runtime's OpenVINO provider, which is not installed",
            fix="install onnxruntime-openvino (x86-64 Linux), or use --precision fp32",
        )
    if not native_bf16():
        raise ConfigError(
            "this CPU has no native bfloat16 (AVX512-BF16 or AMX): emulated it is slower than fp32",
            fix="use --precision fp32, or int8",
        )
    return openvino_runtime(bf16=True)
