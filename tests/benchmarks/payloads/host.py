"""Payload: the host's capabilities and GEMM rates (a subprocess, so that the benchmark's
own process never keeps torch's OpenMP threads; its sides run with the cores to themselves)."""

from __future__ import annotations

import json

from trainer.devices import gemm_rates, host_capabilities
from trainer.threads import configure_threads

configure_threads()
caps = host_capabilities()
caps["gemm"] = [{"rows": rows, "shape": list(shape), **gemm_rates(rows=rows, shape=shape)}
                for rows, shape in ((240, (576, 1536)), (600, (1536, 576)), (240, (576, 49152)))]
print(json.dumps(caps))
