"""The Python SDK of learnware-dock.

    from lwdock.client import LearnwareClient, fit_table, pack_model, semantic

    spec = fit_table(X_train)                               # RKME, fitted locally
    package = pack_model(model, spec, input_shape=64, output_shape=10)
    with LearnwareClient() as market:                       # suite addresses, local token
        done = market.submit(package, semantic(name=..., description=..., ...))
        user = fit_table(X_user)
        result = market.search({"Data": {"Values": ["Table"], "Type": "Class"}}, user)
        y = market.predict(result.best_ids, X_user, strategy="job_selector", user_spec=user)

`AsyncLearnwareClient` is the same API in asyncio. Errors are the typed `lwdock.errors`
exceptions with the server's field violations (`lwdock.client.errors.rpc_status`).
"""

from lwdock.client.aio import AsyncLearnwareClient
from lwdock.client.config import Endpoints, resolve_token
from lwdock.client.errors import CheckTimeout, IntegrityError, RpcStatus, rpc_status
from lwdock.client.specs import (
    fit_images,
    fit_table,
    fit_texts,
    load_spec,
    read_table,
    save_spec,
)
from lwdock.client.sync import LearnwareClient
from lwdock.client.types import (
    CheckReport,
    Learnware,
    MemberOutcome,
    Mixture,
    Prediction,
    Reuser,
    SearchResult,
    SingleMatch,
    State,
    Strategy,
    Submission,
)
from lwdock.package.pack import (
    PickledModel,
    check_package,
    pack_folder,
    pack_model,
    semantic,
    write_package,
)

__all__ = [
    "AsyncLearnwareClient",
    "CheckReport",
    "CheckTimeout",
    "Endpoints",
    "IntegrityError",
    "Learnware",
    "LearnwareClient",
    "MemberOutcome",
    "Mixture",
    "PickledModel",
    "Prediction",
    "Reuser",
    "RpcStatus",
    "SearchResult",
    "SingleMatch",
    "State",
    "Strategy",
    "Submission",
    "check_package",
    "fit_images",
    "fit_table",
    "fit_texts",
    "load_spec",
    "pack_folder",
    "pack_model",
    "read_table",
    "resolve_token",
    "rpc_status",
    "save_spec",
    "semantic",
    "write_package",
]
