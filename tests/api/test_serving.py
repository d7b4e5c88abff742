"""The logged model (api/serving.py): a pyfunc with a signature, made of the model's code and its tensors (nothing
pickled), and a real `mlflow models serve` of the registered model answering as the local API does."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import stage_deps as imports
import torch

from mnist_vae import load, preprocess
from mnist_vae.api import serving
from mnist_vae.api import tasks as inference
from mnist_vae.errors import UserError
from mnist_vae.ops.team_server import free_port
from mnist_vae.vae.model import VAE


@pytest.fixture(scope="module")
def vae(small_vae_project):
    return load(small_vae_project / "models" / "vae.pt")


@pytest.fixture(scope="module")
def pixels(small_vae_project):
    """Three raw test digits, uint8 (3, 784): what a client sends."""
    return np.load(small_vae_project / "data" / "raw" / "mnist.npz")["x_test"][:3].reshape(3, 784)


@pytest.fixture(scope="module")
def saved(small_vae_project, vae, tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "model"
    models = small_vae_project / "models"
    serving.save(path, models / "vae.pt", models / "sampler.pt", vae.dequantize, models / "best_sampler.json")
    return path


def expected(vae, pixels) -> dict:
    """The local API's answers to the requests below."""
    x = preprocess(pixels, vae.dequantize)
    mu, logvar = inference.encode(vae, x)
    return {
        "sample": inference.sample(vae, 5, seed=7, temperature=0.8, sampler="gmm").numpy(),  # the recorded best
        "sample_gmm": inference.sample(vae, 5, seed=7, sampler="gmm").numpy(),
        "sample_prior": inference.sample(vae, 5, seed=7, sampler="prior").numpy(),
        "encode": {"mu": mu.numpy(), "logvar": logvar.numpy()},
        "decode": inference.decode(vae, mu).numpy(),
        "reconstruct": inference.reconstruct(vae, x).numpy(),
    }


def requests(vae, pixels) -> dict:
    mu = inference.encode(vae, preprocess(pixels, vae.dequantize))[0]
    return {
        "sample": ([[0]], {"task": "sample", "n": 5, "seed": 7, "temperature": 0.8}),
        "sample_gmm": ([[0]], {"task": "sample", "n": 5, "seed": 7, "sampler": "gmm"}),
        "sample_prior": ([[0]], {"task": "sample", "n": 5, "seed": 7, "sampler": "prior"}),
        "encode": (pixels.tolist(), {"task": "encode"}),
        "decode": (mu.tolist(), {"task": "decode"}),
        "reconstruct": (pixels.tolist(), {"task": "reconstruct"}),
    }


def assert_same(got, want, task):
    if task == "encode":
        for key in ("mu", "logvar"):
            np.testing.assert_array_equal(np.float32(got[key]), want[key], err_msg=key)
    else:
        np.testing.assert_array_equal(np.float32(got), want, err_msg=task)


@pytest.mark.mlflow
def test_the_saved_model_is_a_signed_pyfunc_that_answers_as_the_local_api(saved, vae, pixels):
    import mlflow

    pyfunc = mlflow.pyfunc.load_model(str(saved))
    meta = pyfunc.metadata
    assert "model_code_path" in meta.flavors["python_function"]  # MLflow's models-from-code: no pickled model
    assert {p.name: p.default for p in meta.signature.params.params} == {"task": "reconstruct", "n": 1, "seed": 0,
                                                                         "temperature": None, "sampler": None}
    assert meta.metadata == {"mnist_vae_format": 2, "dequantize_mode": "uniform"}
    want = expected(vae, pixels)
    for task, (inputs, params) in requests(vae, pixels).items():
        assert_same(pyfunc.predict(np.asarray(inputs, np.float64), params=params), want[task], task)


def test_the_served_modules_are_exactly_what_the_models_code_imports():
    # the package files the model's code imports, transitively (the import graph, lazy imports too)
    needed = imports.closure({"mnist_vae.api.serving"})
    assert sorted(imports.module_file(m).removeprefix("src/mnist_vae/") for m in needed) == sorted(serving.SERVED_MODULES)
    assert not [n for n in serving.SERVED_MODULES if n.startswith(("ops/", "pipeline/", "report/", "scoring/", "command_line"))]


def test_the_pyfunc_answers_each_task_as_the_local_api_and_bad_requests_in_one_line(vae, pixels):
    served = serving.ServedVAE()
    served.model = vae  # what load_context makes of the model's artifacts
    want = expected(vae, pixels)
    for task, (inputs, params) in requests(vae, pixels).items():
        assert_same(served.predict(None, np.asarray(inputs, np.float64), params=params), want[task], task)


def test_a_sample_answer_names_its_sampler_in_the_log(vae, caplog):
    served = serving.ServedVAE()
    served.model = vae
    with caplog.at_level("INFO", logger="mnist_vae.serving"):
        served.predict(None, np.zeros((1, 1)), params={"task": "sample", "n": 3, "seed": 1})
        served.predict(None, np.zeros((1, 1)), params={"task": "sample", "n": 2, "seed": 1, "sampler": "prior"})
    assert [r.getMessage() for r in caplog.records] == [
        "sample: 3 draws, seed 1, from the sampler gmm at temperature 1 (the model's default)",
        "sample: 2 draws, seed 1, from the sampler prior at temperature 1"]


@pytest.mark.mlflow
def test_the_model_carries_the_code_it_runs_and_nothing_more(saved):
    code = saved / "code" / "mnist_vae"
    shipped = sorted(str(p.relative_to(code)) for p in code.rglob("*.py"))
    assert shipped == sorted(serving.SERVED_MODULES)
    assert sorted(p.name for p in (saved / "artifacts").iterdir()) == ["best_sampler.json", "sampler.pt", "settings.json", "vae.pt"]
    assert not list(saved.rglob("*.pkl")) and not list(saved.rglob("*.pth"))


@pytest.mark.mlflow
def test_loading_the_saved_model_unpickles_nothing(saved, vae, monkeypatch):
    import pickle

    import mlflow

    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    pyfunc = mlflow.pyfunc.load_model(str(saved))
    z = np.zeros((1, 4))
    np.testing.assert_array_equal(np.float32(pyfunc.predict(z, params={"task": "decode"})), inference.decode(vae, z).numpy())


@pytest.mark.mlflow
@pytest.mark.parametrize("inputs,params,message", [
    ([[0.0, 1.0]], {"task": "decode"}, "decode: latent vectors must have length 4"),
    ([[0.0] * 10], {"task": "encode"}, "inputs must be (N, 784) rows of pixels"),
    ([[0.5] * 784], {"task": "reconstruct"}, "pixels must be whole numbers 0..255"),
    ([[0.0]], {"task": "generate"}, "unknown task 'generate'"),
    ([[0.0]], {"task": "sample", "n": 0}, "at least 1"),
    ([[0.0]], {"task": "sample", "sampler": "flow"}, "sample: unknown sampler 'flow'; this model has: prior, gmm"),
])
def test_bad_requests_raise_a_one_line_mlflow_error(saved, inputs, params, message):
    import mlflow
    from mlflow.exceptions import MlflowException

    pyfunc = mlflow.pyfunc.load_model(str(saved))
    with pytest.raises(MlflowException) as exc:
        pyfunc.predict(np.asarray(inputs, np.float64), params=params)
    assert message in str(exc.value) and exc.value.error_code == "INVALID_PARAMETER_VALUE"


# ---------------------------------------------------------------- a real server


@pytest.fixture(scope="module")
def server(registered_vae, tmp_path_factory):
    """`mlflow models serve -m models:/mnist-vae/<version> --env-manager local` on 127.0.0.1; stopped after."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**registered_vae.env, "no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1",  # serve execs uvicorn from PATH
           "PATH": os.pathsep.join([os.path.dirname(sys.executable), registered_vae.env.get("PATH", os.environ["PATH"])])}
    cmd = [os.path.join(os.path.dirname(sys.executable), "mlflow"), "models", "serve", "-m",
           f"models:/mnist-vae/{registered_vae.version}", "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port),
           "-w", "1"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{url}/ping", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the model server did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):  # a server that never started has no group left
            os.killpg(proc.pid, signal.SIGTERM)  # the server and its workers: the group this fixture started
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(f"{url}/invocations", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_served_registered_model_answers_as_the_local_api(server, vae, pixels):
    want = expected(vae, pixels)
    for task, (inputs, params) in requests(vae, pixels).items():
        status, answer = post(server, {"inputs": inputs, "params": params})
        assert status == 200, answer
        assert_same(answer["predictions"], want[task], task)
    status, answer = post(server, {"inputs": [[0.0, 1.0]], "params": {"task": "decode"}})
    assert status == 400 and "latent vectors must have length 4" in answer["message"]
    status, answer = post(server, {"inputs": [[0.0]], "params": {"task": "sample", "sampler": "flow"}})
    assert status == 400 and "unknown sampler 'flow'; this model has: prior, gmm" in answer["message"]
    status, answer = post(server, {"inputs": [[0.0]], "params": {"task": "sample", "n": "many"}})
    assert status == 400 and "'n'" in answer["message"]  # the signature's params schema


@pytest.mark.mlflow
def test_a_saved_vampprior_model_samples_from_its_own_prior(tmp_path):
    import mlflow

    from mnist_vae.params import ModelParams
    from mnist_vae.vae.model import save_checkpoint

    torch.manual_seed(0)
    vamp = VAE(ModelParams(hidden_dims=[16], latent_dim=3, prior="vamp", vamp_components=5)).eval()
    save_checkpoint(tmp_path / "vae.pt", vamp)
    serving.save(tmp_path / "model", tmp_path / "vae.pt", None, "uniform")
    got = mlflow.pyfunc.load_model(str(tmp_path / "model")).predict(np.zeros((1, 1)), params={"task": "sample", "n": 4, "seed": 2})
    with torch.no_grad():
        want = vamp.mean(vamp.decode(vamp.sample_prior(4, torch.Generator().manual_seed(2))))
    np.testing.assert_array_equal(np.float32(got), want.numpy())


@pytest.mark.mlflow
def test_a_model_logged_by_an_older_version_is_refused_in_one_line(tmp_path, monkeypatch):
    """A pickled PyTorch model (how mnist-vae logged its model before) is not unpickled: one line saying how to
    log it again."""
    import mlflow

    from mnist_vae.params import ModelParams

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    torch.manual_seed(0)
    with mlflow.start_run() as run:
        mlflow.pytorch.log_model(VAE(ModelParams(hidden_dims=[8], latent_dim=2)), name="vae-old",
                                 registered_model_name="old-vae", serialization_format="pickle")
    for uri in ("models:/old-vae/1", f"runs:/{run.info.run_id}/vae-old"):
        with pytest.raises(UserError) as info:
            load(uri)
        message = str(info.value)
        assert "\n" not in message and "logged by an older mnist-vae" in message and "log it again with this version's track stage" in message
