"""The disaggregated graph: prefill workers run prompts and hand the KV cache to decode.

vidgraph serve graphs.disagg -f configs/disagg.yaml
"""

from components.decode_worker import DecodeWorker
from components.encode_worker import EncodeWorker
from components.frontend import Frontend
from components.prefill_worker import PrefillWorker
from components.processor import Processor

graph = Frontend.link(Processor).link(DecodeWorker).link(PrefillWorker).link(EncodeWorker)
