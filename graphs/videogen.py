"""Video generation: a frontend in front of N Wan workers (prompt in, MP4 out).

vidgraph serve graphs.videogen -f configs/videogen.yaml
"""

from components.frontend import Frontend
from components.video_generation_worker import VideoGenerationWorker

graph = Frontend.link(VideoGenerationWorker)
