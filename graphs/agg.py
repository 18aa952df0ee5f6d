"""The aggregated graph: the decode worker prefills locally, encode workers scale apart.

vidgraph serve graphs.agg -f configs/agg.yaml
"""

from components.decode_worker import DecodeWorker
from components.encode_worker import EncodeWorker
from components.frontend import Frontend
from components.processor import Processor

graph = Frontend.link(Processor).link(DecodeWorker).link(EncodeWorker)
