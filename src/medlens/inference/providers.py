"""Which ONNX Runtime execution provider runs a model, and which graph of a 3D model suits it.

On x86-64 Linux medlens installs ONNX Runtime's OpenVINO build (`onnxruntime-openvino`), which
keeps the CPU provider and adds OpenVINO's. Its CPU plugin has direct (oneDNN) 3D convolutions,
so 3D models run on it as plain Conv3d graphs: CompactNet 3D at batch 32 took 2.1 ms per volume
there against 3.4 / 4.7 ms on the CPU provider (Conv3d unrolled to 2D / plain) and 3.0 ms in
torch eager (`benchmarks/bench_inference_latency.py`). 2D models were not faster on it
(ResNet-18 224^2 28.2 vs 26.5 ms; CompactNet 28^2 at batch 1 0.62 vs 0.52 ms, medians of 200
interleaved calls), so they stay on the CPU provider. A CUDA provider, when present, wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


def runtime_for(spatial_dims: int, *, openvino: bool | None = None) -> Runtime:
    """The runtime for a model with ``spatial_dims`` spatial axes on this machine.

    ``openvino`` forces OpenVINO on (if installed) or off; by default it runs 3D models."""
    have = available()
    if CUDA in have:
        return Runtime((CUDA, CPU))
    use_openvino = spatial_dims == 3 if openvino is None else openvino
    if use_openvino and OPENVINO in have:
        return Runtime((OPENVINO, CPU), ({"device_type": "CPU"}, {}), unroll_3d=False)
    return Runtime((CPU,))
