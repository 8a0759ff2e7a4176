"""A local ARM server for Microsoft.ContainerInstance (api-version 2023-05-01), checked against the spec.

Every request it receives and every response it sends is validated against the shipped Swagger
document (``spec/containerInstance.json``); what does not validate is recorded in
``LocalArm.validation_failures`` (and answered 400, or 500 for the server's own bug). Container
groups live in memory and follow a deterministic simulation (see :mod:`.simulation` and
:mod:`.shell`). Run it alone with ``python -m providers.aci.localarm --port 8080`` or in-process::

    async with serve(reads_per_second=5) as arm:
        client = ContainerInstanceManagementClient(cred, "sub", base_url=arm.base_url,
                                                   authentication_policy=SansIOHTTPPolicy(),
                                                   polling_interval=0)
        ...
        assert arm.validation_failures == []

It imports nothing of the project.
"""

from .examples import request_body_from_response, shape_differences
from .knobs import Knobs
from .server import ARM_KEY, ArmError, LocalArm, create_app, default_spec, serve, wait_for
from .spec import API_VERSION, SpecDocument, example_names, load_example, load_spec

__all__ = [
    "API_VERSION",
    "ARM_KEY",
    "ArmError",
    "Knobs",
    "LocalArm",
    "SpecDocument",
    "create_app",
    "default_spec",
    "example_names",
    "load_example",
    "load_spec",
    "request_body_from_response",
    "serve",
    "shape_differences",
    "wait_for",
]
