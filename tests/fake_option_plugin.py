"""A backend plugin for orchestrator tests: two options, one that changes results and one that does not."""
from stages.api import Param
from stages.availability import Requires

OPTIONS = {"level": Param(int, min=0, max=5), "tool": Param(str, keyed=False, doc="where a tool is")}
REQUIRES = Requires()
HOW_TO_GET = "nothing to get: it is a test's."
