"""A local Azure Batch data plane for tests: spec-checked, shared-key verified, with a task simulation.

Stand-alone (an import-linter contract keeps it free of the rest of the project): run it with
``python -m providers.azurebatch.localbatch --port N --pool gpu:standard_nc6s_v3:1:2``, or in-process
with ``async with serve() as batch: ...``. See :mod:`.server` for the simulation and :mod:`.admin`
for the ``/_localbatch/`` endpoints tests steer it with.
"""

from .server import DEFAULT_ACCOUNT, DEFAULT_KEY, LocalBatch, create_app, serve

__all__ = ["DEFAULT_ACCOUNT", "DEFAULT_KEY", "LocalBatch", "create_app", "serve"]
