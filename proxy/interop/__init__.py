"""CalDAV features plain Radicale lacks, answered by calrelay's front door (docs/interop.md).

Each feature is a small module; :mod:`.registry` is the one place that says which REPORTs calrelay answers
itself and dispatches them, so that a guard which refuses unknown REPORTs can consult it.
"""

from proxy.interop.registry import CALRELAY_REPORTS, calrelay_answers, setup_interop

__all__ = ["CALRELAY_REPORTS", "calrelay_answers", "setup_interop"]
