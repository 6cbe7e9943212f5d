"""What a log record costs on the decision path: the fields no format shows are not computed."""

from __future__ import annotations

import re
import subprocess
import sys

PROBE = """
import logging, sys
from chatmod.runtime.logsetup import setup_logging
setup_logging("info")
captured = []
logging.getLogger().handlers[0].addFilter(lambda record: captured.append(record) or True)
logging.getLogger("chatmod.decisions").info("%s", "pass   verdict=pass id=m-1")
[record] = captured
print(record.funcName, record.lineno, record.thread, record.threadName, record.process,
      record.processName)
"""


def test_records_skip_the_caller_thread_and_process_lookups() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          timeout=60, check=True)
    # Before: the caller found by walking the stack (<module> 7), thread and process names.
    assert done.stdout.split() == ["(unknown", "function)", "0", "None", "None", "None",
                                   "None"]
    # The line itself is unchanged.
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO    chatmod\.decisions: "
                        r"pass   verdict=pass id=m-1\n", done.stderr)
