"""The logged model: still the VAE for mlflow.pytorch, a pyfunc with a signature, and a real
`mlflow models serve` of the registered model answering as the local API does."""

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
import torch

from mnist_vae import load, preprocess
from mnist_vae.api import tasks as inference
from mnist_vae.api import serving
from mnist_vae.vae.model import VAE
from mnist_vae.ops.team_server import free_port


@pytest.fixture(scope="module")
def vae(small_vae_project):
    return load(small_vae_project / "models" / "vae.pt")


@pytest.fixture(scope="module")
def pixels(small_vae_project):
    """Three raw test digits, uint8 (3, 784): what a client sends."""
    return np.load(small_vae_project / "data" / "raw" / "mnist.npz")["x_test"][:3].reshape(3, 784)


@pytest.fixture(scope="module")
def saved(vae, tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "model"
    serving.save_model(str(path), pytorch_model=vae, dequantize=vae.dequantize)
    return path


def expected(vae, pixels) -> dict:
    """The local API's answers to the requests below."""
    x = preprocess(pixels, vae.dequantize)
    mu, logvar = inference.encode(vae, x)
    return {
        "sample": inference.sample(vae, 5, seed=7, temperature=0.8).numpy(),
        "sample_gmm": inference.sample(vae, 5, seed=7, sampler="gmm").numpy(),
        "encode": {"mu": mu.numpy(), "logvar": logvar.numpy()},
        "decode": inference.decode(vae, mu).numpy(),
        "reconstruct": inference.reconstruct(vae, x).numpy(),
    }


def requests(vae, pixels) -> dict:
    mu = inference.encode(vae, preprocess(pixels, vae.dequantize))[0]
    return {
        "sample": ([[0]], {"task": "sample", "n": 5, "seed": 7, "temperature": 0.8}),
        "sample_gmm": ([[0]], {"task": "sample", "n": 5, "seed": 7, "sampler": "gmm"}),
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


def test_the_saved_model_is_the_vae_for_mlflow_pytorch_and_a_signed_pyfunc(saved, vae, pixels):
    import mlflow

    model = mlflow.pytorch.load_model(str(saved))
    assert isinstance(model, VAE) and model.dequantize == "uniform"
    z = torch.randn(2, 4)
    assert torch.equal(inference.decode(model, z), inference.decode(vae, z))
    pyfunc = mlflow.pyfunc.load_model(str(saved))
    meta = pyfunc.metadata
    assert meta.flavors["python_function"]["loader_module"] == "mnist_vae.api.serving"
    assert {p.name: p.default for p in meta.signature.params.params} == {"task": "reconstruct", "n": 1, "seed": 0, "temperature": 1.0,
                                                                         "sampler": "prior"}
    assert meta.metadata["dequantize_mode"] == "uniform"
    want = expected(vae, pixels)
    for task, (inputs, params) in requests(vae, pixels).items():
        assert_same(pyfunc.predict(np.asarray(inputs, np.float64), params=params), want[task], task)


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


def test_a_saved_vampprior_model_samples_from_its_own_prior(tmp_path):
    import mlflow

    from mnist_vae.params import ModelParams

    torch.manual_seed(0)
    vamp = VAE(ModelParams(hidden_dims=[16], latent_dim=3, prior="vamp", vamp_components=5)).eval()
    serving.save_model(str(tmp_path / "model"), pytorch_model=vamp, dequantize="uniform")
    got = mlflow.pyfunc.load_model(str(tmp_path / "model")).predict(np.zeros((1, 1)), params={"task": "sample", "n": 4, "seed": 2})
    with torch.no_grad():
        want = vamp.mean(vamp.decode(vamp.sample_prior(4, torch.Generator().manual_seed(2))))
    np.testing.assert_array_equal(np.float32(got), want.numpy())
    loaded = mlflow.pytorch.load_model(str(tmp_path / "model"))
    assert loaded.config.prior == "vamp" and torch.equal(loaded.pseudo_inputs, vamp.pseudo_inputs)
