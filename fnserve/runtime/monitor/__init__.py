"""Watch the model: live input and output distributions per version against the training reference.

* :mod:`~fnserve.runtime.monitor.features` bins a column (quantiles, vocabularies, tensor summaries);
* :mod:`~fnserve.runtime.monitor.reference` builds, writes, reads and checks a version's reference;
* :mod:`~fnserve.runtime.monitor.window` keeps live counts over a sliding window;
* :mod:`~fnserve.runtime.monitor.drift` scores live against reference (PSI, Jensen-Shannon);
* :mod:`~fnserve.runtime.monitor.core` ties them to the runtime; :mod:`~fnserve.runtime.monitor.report`
  shapes ``GET /monitor`` and merges replicas' documents; :mod:`~fnserve.runtime.monitor.config`
  reads ``[monitor]`` of ``function.toml``.
"""

from fnserve.runtime.monitor.config import MonitorConfig
from fnserve.runtime.monitor.core import Monitor
from fnserve.runtime.monitor.reference import REFERENCE_FILE
from fnserve.runtime.monitor.report import merge

__all__ = ["REFERENCE_FILE", "Monitor", "MonitorConfig", "merge"]
