"""GPU model replicas, checked on a CPU machine without Ray: the device choice, the Serve
options that carry num_gpus, the config (TOML) that sets them, and the providers' loads
with CUDA faked in or out. Nothing here starts Ray."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from voxray.cluster.autoscaling import actor_options, deployment_options
from voxray.config import ModelsConfig, Scaling, VoxrayConfig
from voxray.providers.catalog import ProviderSpec, ProvidersConfig
from voxray.providers.device import DeviceUnavailable, onnx_cuda_devices, pick_device, replica_cuda
from voxray.providers.model_paths import check_whisper_dir, whisper_model_path

ROOT = Path(__file__).resolve().parent.parent

# --- the choice -------------------------------------------------------------------


@pytest.mark.parametrize("requested, compute, cuda, expected", [
    ("auto", "auto", 1, ("cuda", "float16")),
    ("auto", "auto", 0, ("cpu", "int8")),
    ("cpu", "auto", 2, ("cpu", "int8")),
    ("cuda", "auto", 1, ("cuda", "float16")),
    # An explicit compute type goes through as it is...
    ("cuda", "int8_float16", 1, ("cuda", "int8_float16")),
    ("auto", "int8_float16", 1, ("cuda", "int8_float16")),
    ("cpu", "int8_float32", 0, ("cpu", "int8_float32")),
    ("auto", "int8", 1, ("cuda", "int8")),
    # ...except a GPU-only one where "auto" found no GPU: the CPU's default, not a load error.
    ("auto", "float16", 0, ("cpu", "int8")),
    ("auto", "int8_bfloat16", 0, ("cpu", "int8")),
    ("auto", "float32", 0, ("cpu", "float32")),
    # An explicit "cpu" with a GPU type is the operator's word: CTranslate2 refuses it by name.
    ("cpu", "float16", 1, ("cpu", "float16")),
])
def test_pick_device(requested, compute, cuda, expected):
    assert pick_device(requested, compute, cuda) == expected


def test_cuda_without_a_cuda_device_is_a_clear_error():
    with pytest.raises(DeviceUnavailable, match=r"device 'cuda' was asked for.*get_cuda_device_count\(\) found "
                       r"none.*num_gpus > 0.*'cpu'"):
        pick_device("cuda", "auto", 0)
    with pytest.raises(DeviceUnavailable, match="onnxruntime"):
        pick_device("cuda", "auto", 0, probe="onnxruntime.get_available_providers() lacks CUDA")


def test_unknown_device_is_refused():
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda"):
        pick_device("gpu", "auto", 1)


@pytest.mark.parametrize("visible, gpu_ids, expected", [
    (4, [], 0),       # a replica Ray gave no GPU stays off its node's GPUs
    (1, [0], 1),      # a GPU of its own (Ray set CUDA_VISIBLE_DEVICES to it)
    (1, ["1"], 1),
    (2, None, 2),     # outside Ray: what the process sees
    (0, None, 0),
    (0, [0], 0),      # Ray lent a GPU the process cannot use
])
def test_replica_cuda(visible, gpu_ids, expected):
    count, probe = replica_cuda(visible, gpu_ids, "the probe")
    assert count == expected
    assert probe == ("this replica holds no GPU: its deployment's num_gpus is 0" if gpu_ids == [] else "the probe")


def test_onnx_cuda_devices():
    assert onnx_cuda_devices(["AzureExecutionProvider", "CPUExecutionProvider"]) == 0
    assert onnx_cuda_devices(["CUDAExecutionProvider", "CPUExecutionProvider"]) == 1


# --- Serve options ----------------------------------------------------------------


def test_no_resources_set_leaves_the_decorators_options_alone():
    opts = deployment_options(VoxrayConfig())
    assert all("ray_actor_options" not in o for o in opts.values())


def test_num_gpus_fraction_reaches_the_actor_options_merged_with_the_decorators():
    config = VoxrayConfig(asr=Scaling(num_gpus=0.5), tts=Scaling(num_gpus=0.25, num_cpus=1))
    opts = deployment_options(config)  # the decorators' options read from the classes
    assert opts["asr"]["ray_actor_options"] == {"num_cpus": 0.25, "num_gpus": 0.5}
    assert opts["tts"]["ray_actor_options"] == {"num_cpus": 1, "num_gpus": 0.25}
    assert "ray_actor_options" not in opts["ingress"] and "ray_actor_options" not in opts["vad"]
    assert opts["asr"]["num_replicas"] == 1  # the scaling options are still there


def test_declared_options_are_kept():
    declared = {"asr": {"num_cpus": 0.5, "resources": {"whisper": 1}, "runtime_env": {"env_vars": {"A": "1"}}}}
    config = VoxrayConfig(asr=Scaling(num_gpus=1, min_replicas=1, max_replicas=4))
    opts = deployment_options(config, declared)["asr"]
    assert opts["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 1, "resources": {"whisper": 1},
                                         "runtime_env": {"env_vars": {"A": "1"}}}
    assert opts["autoscaling_config"]["max_replicas"] == 4
    assert declared["asr"] == {"num_cpus": 0.5, "resources": {"whisper": 1},
                               "runtime_env": {"env_vars": {"A": "1"}}}  # not changed in place


def test_num_cpus_alone():
    assert actor_options(Scaling(num_cpus=2), {"num_cpus": 0.5}) == {"num_cpus": 2}
    assert actor_options(Scaling(num_cpus=0), {"num_cpus": 0.5}) == {"num_cpus": 0}


def test_serve_replaces_the_actor_options_so_the_merge_matters():
    """What Serve does with `.options(ray_actor_options=...)` (no Ray started): the dict replaces
    the decorator's, so a bare {"num_gpus": ...} would lose num_cpus 0.25 (Serve puts 1 back)."""
    from voxray.deployments.asr import AsrDeployment

    assert AsrDeployment.options(ray_actor_options={"num_gpus": 0.5}).ray_actor_options["num_cpus"] == 1
    opts = deployment_options(VoxrayConfig(asr=Scaling(num_gpus=0.5)))["asr"]
    merged = AsrDeployment.options(**opts).ray_actor_options
    assert merged["num_cpus"] == 0.25 and merged["num_gpus"] == 0.5


@pytest.mark.parametrize("field", ["num_gpus", "num_cpus"])
def test_negative_resources_are_refused(field):
    with pytest.raises(ValidationError, match=rf"asr\.{field}\n  Input should be greater than or equal to 0"):
        VoxrayConfig.model_validate({"asr": {field: -0.5}})


def test_device_and_compute_type_are_validated():
    with pytest.raises(ValidationError, match="whisper_device"):
        ModelsConfig(whisper_device="gpu")
    with pytest.raises(ValidationError, match="whisper_compute_type"):
        ModelsConfig(whisper_compute_type="fp16")
    with pytest.raises(ValidationError, match="device"):
        ProviderSpec(name="w", kind="whisper", device="tpu")


# --- TOML configs -----------------------------------------------------------------


@pytest.fixture
def no_env(monkeypatch):
    for var in ("VOXRAY_CONFIG", "VOXRAY_PORT", "VOXRAY_HOST"):
        monkeypatch.delenv(var, raising=False)


def test_toml_with_gpu_settings_loads(tmp_path, no_env):
    path = tmp_path / "gpu.toml"
    path.write_text('[asr]\nnum_gpus = 0.25\nmax_replicas = 4\n\n'
                    '[models]\nwhisper_device = "cuda"\nwhisper_compute_type = "int8_float16"\n'
                    'whisper_model = "~/models/whisper-small-ct2"\n\n'
                    '[[providers.asr]]\nname = "big"\nkind = "whisper"\ndevice = "cpu"\ncompute_type = "int8"\n')
    config = VoxrayConfig.load(path)
    assert config.asr.num_gpus == 0.25 and config.tts.num_gpus == 0
    assert (config.models.whisper_device, config.models.whisper_compute_type) == ("cuda", "int8_float16")
    assert config.models.whisper_model == "~/models/whisper-small-ct2"
    assert (config.providers.asr[0].device, config.providers.asr[0].compute_type) == ("cpu", "int8")
    assert deployment_options(config)["asr"]["ray_actor_options"] == {"num_cpus": 0.25, "num_gpus": 0.25}


def test_the_gpu_example_config_loads(no_env):
    config = VoxrayConfig.load(ROOT / "examples" / "cluster-gpu.toml")
    assert config.asr.num_gpus == 0.5 and config.asr.num_cpus == 1
    assert config.models.piper_device == "cpu"
    opts = deployment_options(config)
    assert opts["asr"]["ray_actor_options"] == {"num_cpus": 1, "num_gpus": 0.5}
    assert "ray_actor_options" not in opts["tts"]


# --- the Whisper provider's load --------------------------------------------------


class FakeWhisperModel:
    """Stands in for faster_whisper.WhisperModel: records the load, fails where told."""

    loads: list[dict] = []
    workers: list[int] = []
    fail_on: set[str] = set()

    def __init__(self, path, device, compute_type, cpu_threads, num_workers=1):
        FakeWhisperModel.loads.append({"path": path, "device": device, "compute_type": compute_type})
        FakeWhisperModel.workers.append(num_workers)
        if device in FakeWhisperModel.fail_on:
            raise RuntimeError("Library libcublas.so.12 is not found or cannot be loaded")
        self.model = type("Ct2", (), {"compute_type": compute_type, "is_multilingual": False})()


@pytest.fixture
def fake_ct2(monkeypatch):
    """Set the CUDA device count CTranslate2 reports; WhisperModel is faked."""
    import ctranslate2
    import faster_whisper

    FakeWhisperModel.loads = []
    FakeWhisperModel.fail_on = set()
    monkeypatch.setattr(faster_whisper, "WhisperModel", FakeWhisperModel)

    def set_count(n: int) -> None:
        monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: n)
    return set_count


@pytest.fixture
def ct2_dir(tmp_path) -> Path:
    """A folder shaped like a CTranslate2 conversion (the files faster-whisper reads)."""
    folder = tmp_path / "whisper-small-ct2"
    folder.mkdir()
    for name in ("model.bin", "config.json", "tokenizer.json", "preprocessor_config.json"):
        (folder / name).write_text("{}")
    return folder


def test_explicit_cuda_without_cuda_fails_at_load_not_before(fake_ct2, ct2_dir):
    from voxray.providers.whisper_local import WhisperLocal

    fake_ct2(0)
    w = WhisperLocal(model_path=str(ct2_dir), device="cuda")  # constructing is fine (the driver has no GPU)
    with pytest.raises(DeviceUnavailable, match="device 'cuda' was asked for"):
        w.load()
    assert FakeWhisperModel.loads == []


def test_auto_loads_on_cuda_in_float16_when_there_is_a_gpu(fake_ct2, ct2_dir):
    from voxray.providers.whisper_local import WhisperLocal

    fake_ct2(1)
    w = WhisperLocal(model_path=str(ct2_dir))
    w.load()
    assert FakeWhisperModel.loads == [{"path": str(ct2_dir), "device": "cuda", "compute_type": "float16"}]
    assert w.describe() == {"model": str(ct2_dir), "device": "cuda", "compute_type": "float16",
                            "running_compute_type": "float16"}


def test_auto_falls_back_to_the_cpu_when_cuda_will_not_load(fake_ct2, ct2_dir):
    from voxray.providers.whisper_local import WhisperLocal

    fake_ct2(1)
    FakeWhisperModel.fail_on = {"cuda"}
    w = WhisperLocal(model_path=str(ct2_dir), compute_type="int8_float16")
    w.load()
    assert [(x["device"], x["compute_type"]) for x in FakeWhisperModel.loads] == [("cuda", "int8_float16"),
                                                                                 ("cpu", "int8")]
    assert (w.device, w.compute_type) == ("cpu", "int8")


def test_explicit_cuda_that_will_not_load_fails(fake_ct2, ct2_dir):
    from voxray.providers.whisper_local import WhisperLocal

    fake_ct2(1)
    FakeWhisperModel.fail_on = {"cuda"}
    with pytest.raises(RuntimeError, match="libcublas"):
        WhisperLocal(model_path=str(ct2_dir), device="cuda").load()
    assert len(FakeWhisperModel.loads) == 1


def test_real_whisper_loads_on_this_cpu_machine():
    """The packaged tiny.en, for real: no CUDA here, so "auto" is the CPU with int8."""
    import ctranslate2

    from voxray.providers.whisper_local import WhisperLocal

    if ctranslate2.get_cuda_device_count() > 0:
        pytest.skip("this machine has a CUDA device")
    w = WhisperLocal()
    w.load()
    assert (w.device, w.compute_type) == ("cpu", "int8")
    assert w.describe()["running_compute_type"] == "int8_float32"
    with pytest.raises(DeviceUnavailable):
        WhisperLocal(device="cuda").load()


# --- bring your own Whisper -------------------------------------------------------


def test_a_converted_folder_is_accepted_and_tilde_expanded(ct2_dir, monkeypatch):
    assert check_whisper_dir(str(ct2_dir)) == str(ct2_dir)
    monkeypatch.setenv("HOME", str(ct2_dir.parent))
    assert check_whisper_dir("~/whisper-small-ct2") == str(ct2_dir)
    assert check_whisper_dir(whisper_model_path())  # the packaged tiny.en has every file


def test_a_bare_model_name_or_missing_folder_is_refused_not_downloaded(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'small' is not a folder.*ct2-transformers-converter"):
        check_whisper_dir("small")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        check_whisper_dir(str(tmp_path / "nowhere"))


def test_a_folder_without_the_tokenizer_is_refused(ct2_dir):
    (ct2_dir / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks tokenizer\.json.*--copy_files tokenizer\.json"):
        check_whisper_dir(str(ct2_dir))


def test_models_section_and_provider_settings_reach_the_whisper(fake_ct2, ct2_dir):
    """models.whisper_model (a converted folder) and the device settings, through the ASR chain
    the deployment builds; a replica without a GPU stays on the CPU under "auto"."""
    from voxray.deployments.asr import loaded_devices, make_asr_chain

    fake_ct2(1)
    models = ModelsConfig(whisper_model=str(ct2_dir), whisper_compute_type="int8_float16")
    chain = make_asr_chain(ProvidersConfig(), models, gpu_ids=[0])
    assert FakeWhisperModel.loads[-1] == {"path": str(ct2_dir), "device": "cuda", "compute_type": "int8_float16"}
    assert FakeWhisperModel.workers[-1] == 2  # models.whisper_workers reaches CTranslate2 as its workers
    assert loaded_devices(chain)["whisper"]["device"] == "cuda"

    # num_gpus 0 on a GPU node: "auto" is the CPU, and the GPU compute type its default int8.
    make_asr_chain(ProvidersConfig(), models, gpu_ids=[])
    assert FakeWhisperModel.loads[-1]["device"] == "cpu" and FakeWhisperModel.loads[-1]["compute_type"] == "int8"
    with pytest.raises(DeviceUnavailable, match="this replica holds no GPU"):
        make_asr_chain(ProvidersConfig(), models.model_copy(update={"whisper_device": "cuda"}), gpu_ids=[])
    make_asr_chain(ProvidersConfig(), models)  # outside Ray: what the process sees
    assert FakeWhisperModel.loads[-1]["device"] == "cuda"

    # A provider's own settings win over the models section's.
    providers = ProvidersConfig(asr=[ProviderSpec(name="w", kind="whisper", device="cpu", compute_type="float32")])
    make_asr_chain(providers, models, gpu_ids=[0])
    assert FakeWhisperModel.loads[-1] == {"path": str(ct2_dir), "device": "cpu", "compute_type": "float32"}


# --- Piper ------------------------------------------------------------------------


class FakeSession:
    def __init__(self, providers):
        self._providers = providers

    def get_providers(self):
        return self._providers


@pytest.fixture
def fake_piper(monkeypatch):
    """onnxruntime's available providers and what the session gets, both set by the test."""
    import onnxruntime
    from piper import PiperVoice

    state = {"available": ["CPUExecutionProvider"], "session": None, "loads": []}

    def load(path, use_cuda=False):
        state["loads"].append(use_cuda)
        got = state["session"] or (["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda
                                   else ["CPUExecutionProvider"])
        return type("Voice", (), {"session": FakeSession(got)})()

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: state["available"])
    monkeypatch.setattr(PiperVoice, "load", staticmethod(load))
    return state


def test_piper_cuda_without_onnxruntime_gpu_is_a_clear_error(fake_piper):
    from voxray.providers.piper_local import PiperLocal

    with pytest.raises(DeviceUnavailable, match="no CUDAExecutionProvider in onnxruntime.get_available_providers"
                       r"\(\): install onnxruntime-gpu"):
        PiperLocal(device="cuda").load()
    assert fake_piper["loads"] == []
    p = PiperLocal()
    p.load()
    assert fake_piper["loads"] == [False] and p.device == "cpu"


def test_piper_auto_uses_cuda_when_onnxruntime_has_it(fake_piper):
    from voxray.providers.piper_local import PiperLocal

    fake_piper["available"] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    p = PiperLocal()
    p.load()
    assert fake_piper["loads"] == [True] and p.device == "cuda"
    assert p.describe()["session_providers"][0] == "CUDAExecutionProvider"


def test_piper_cuda_provider_that_did_not_start(fake_piper):
    """onnxruntime-gpu without a usable GPU: the session runs on the CPU."""
    from voxray.providers.piper_local import PiperLocal

    fake_piper["available"] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    fake_piper["session"] = ["CPUExecutionProvider"]
    p = PiperLocal()
    p.load()
    assert p.device == "cpu"
    with pytest.raises(DeviceUnavailable, match="did not start"):
        PiperLocal(device="cuda").load()


def test_tts_chain_passes_the_device(fake_piper):
    from voxray.deployments.tts import make_tts_chain

    fake_piper["available"] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    make_tts_chain(ProvidersConfig(), None, "auto", gpu_ids=[])
    make_tts_chain(ProvidersConfig(), None, "auto", gpu_ids=[0])
    make_tts_chain(ProvidersConfig(), None, "cpu", gpu_ids=[0])
    make_tts_chain(ProvidersConfig(), None)  # outside Ray
    assert fake_piper["loads"] == [False, True, False, True]
    with pytest.raises(DeviceUnavailable, match="this replica holds no GPU"):
        make_tts_chain(ProvidersConfig(), None, "cuda", gpu_ids=[])


def test_real_piper_loads_on_the_cpu():
    import onnxruntime

    from voxray.providers.piper_local import PiperLocal

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    p = PiperLocal()
    p.load()
    assert p.device == "cpu" and p.describe()["session_providers"] == ["CPUExecutionProvider"]
    with pytest.raises(DeviceUnavailable):
        PiperLocal(device="cuda").load()
