"""KServe v2 / Open Inference Protocol on reuse_service, driven by the official Triton client
(`tritonclient.grpc`): model name = learnware id, ACTIVE learnwares only.

The client runs in a child process: tritonclient registers its own `inference.*` protobuf
messages in the default descriptor pool, as do our generated KServe stubs (the same package
name, from another file), so the two cannot be imported into one Python process.
"""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from lwdock.common.v1 import learnware_pb2
from lwdock.embedded_db import scratch_database
from lwdock.errors import InvalidArgument
from lwdock.inference import grpc_predict_v2_pb2 as v2
from reuse_service.kserve import input_array
from reuse_service.sandbox import probe_bubblewrap
from tests.reuse_support import (
    FIXTURES,
    Market,
    hostile_model,
    make_package,
    semantic_json,
    start_market,
)

CLIENT = textwrap.dedent(
    """
    import json
    import sys

    import numpy as np
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    url, digits, rejected, inputs_path = sys.argv[1:5]
    x = np.load(inputs_path)
    client = triton.InferenceServerClient(url=url)
    out = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "digits_ready": client.is_model_ready(digits),
        "rejected_ready": client.is_model_ready(rejected),
        "metadata": client.get_model_metadata(digits, as_json=True),
        "outputs": {},
        "errors": {},
    }
    for datatype, dtype in (("FP64", np.float64), ("FP32", np.float32)):
        tensor = triton.InferInput("input", list(x.shape), datatype)
        tensor.set_data_from_numpy(x.astype(dtype))
        result = client.infer(digits, [tensor], outputs=[triton.InferRequestedOutput("output")])
        out["outputs"][datatype] = result.as_numpy("output").tolist()
    for label, model, shape in (("rejected", rejected, [2, 3]), ("unknown", "no-such-lw", [2, 3]),
                                ("bad_shape", digits, [2, 7])):
        tensor = triton.InferInput("input", shape, "FP64")
        tensor.set_data_from_numpy(np.zeros(shape))
        try:
            client.infer(model, [tensor])
            out["errors"][label] = None
        except InferenceServerException as exc:
            out["errors"][label] = [exc.status(), exc.message()]
    print(json.dumps(out))
    """
)


@pytest_asyncio.fixture(scope="module")
async def market(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Market, str, str]]:
    if not (await probe_bubblewrap()).available:
        pytest.skip("no sandbox on this host")
    with scratch_database(database_url, "lwdock_kserve") as url:
        market = await start_market(tmp_path_factory.mktemp("kserve"), url)
        try:
            digits = await market.upload(
                (FIXTURES / "learnware_digits_svc.zip").read_bytes(),
                (FIXTURES / "learnware_digits_svc.semantic.json").read_text(),
            )
            short = await market.upload(
                make_package(hostile_model("return X[:1, 0]")), semantic_json("short-one", 3)
            )
            active = await market.wait_checked(digits.name)
            assert active.state == learnware_pb2.LEARNWARE_STATE_ACTIVE, active.state_reason
            rejected = await market.wait_checked(short.name)
            assert rejected.state == learnware_pb2.LEARNWARE_STATE_REJECTED
            yield market, digits.learnware_id, short.learnware_id
        finally:
            await market.stop()


async def test_triton_client_against_learnwares(
    market: tuple[Market, str, str], tmp_path: Path
) -> None:
    server, digits, rejected = market
    (tmp_path / "client.py").write_text(CLIENT)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(tmp_path / "client.py"),
        server.reuse.address,
        digits,
        rejected,
        str(FIXTURES / "digits_classes0to4_first100.npy"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, stderr.decode()
    out = json.loads(stdout.decode().strip().splitlines()[-1])

    assert out["live"] and out["ready"] and out["digits_ready"]
    assert not out["rejected_ready"]
    meta = out["metadata"]
    assert meta["name"] == digits and meta["platform"] == "lwdock-sandbox"
    assert meta["inputs"][0]["shape"] == ["-1", "64"] and meta["outputs"][0]["shape"] == ["-1", "5"]
    expected = np.load(FIXTURES / "digits_classes0to4_first100_pred.npy")
    for datatype in ("FP64", "FP32"):
        np.testing.assert_array_equal(np.array(out["outputs"][datatype]), expected)

    errors = out["errors"]
    assert errors["rejected"][0] == "StatusCode.FAILED_PRECONDITION"
    assert "not ACTIVE" in errors["rejected"][1]
    assert errors["unknown"][0] == "StatusCode.NOT_FOUND"
    assert errors["bad_shape"][0] == "StatusCode.INVALID_ARGUMENT"


def test_typed_contents_out_of_range_are_invalid_arguments() -> None:
    def request(datatype: str, **contents: list[int]) -> v2.ModelInferRequest:
        tensor = v2.ModelInferRequest.InferInputTensor(
            name="input",
            datatype=datatype,
            shape=[1, len(next(iter(contents.values())))],
            contents=v2.InferTensorContents(**contents),
        )
        return v2.ModelInferRequest(model_name="m", inputs=[tensor])

    for datatype, contents in (
        ("UINT8", {"uint_contents": [1, 300]}),
        ("INT8", {"int_contents": [-129, 0]}),
        ("UINT16", {"uint_contents": [65536]}),
        ("INT16", {"int_contents": [40000]}),
    ):
        with pytest.raises(InvalidArgument) as caught:
            input_array(request(datatype, **contents))
        assert caught.value.violations[0].field.startswith("inputs[0].contents.")
        assert "out of range" in caught.value.message
    edge = input_array(request("UINT8", uint_contents=[0, 255]))
    assert edge.dtype == np.uint8 and edge.tolist() == [[0, 255]]
    assert input_array(request("INT8", int_contents=[-128, 127])).tolist() == [[-128, 127]]
