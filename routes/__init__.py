"""The frontend's HTTP surface: one router per API family, and the helpers they share.

    app.py         build_app: middleware, error handlers, the families included
    chat.py        POST /v1/chat/completions
    completions.py POST /v1/completions
    models.py      GET /v1/models
    ops.py         /health, /live, /metrics (for operators)
    videos.py      /v1/videos (OpenAI's job API) and /v1/videos/generations (Dynamo's)
    video_jobs.py  the trip a video job takes: submit to a worker, find it in storage
    generate.py    the trip through the graph every generating route takes
                   (admission, keep-alive, disconnects, `n` choices)
    sse.py         Server-Sent Events framing
    errors.py      OpenAI-shaped error bodies, and the handlers that send them
    admission.py   how many requests are in flight, the FIFO queue, and the drain
    http_guards.py the API key and body-size middleware
    metrics.py     what /metrics exports
    state.py       what routes read from `app.state`, and `serves(model_type)`

Adding a family: write `routes/<family>.py` with a module-level `router`
(`APIRouter(dependencies=[Depends(serves("<model type>"))])` if a model must
serve it), reading the graph through `state.frontend(request)`, then add the
module to `FAMILIES` in `app.py`. The API-key guard covers it by its `/v1/`
path; `tests/routes/test_routes_auth.py` finds it by itself.

This package depends on `protocol`, `media` and `videogen` (and FastAPI); `components.frontend`
builds the state from the runtime and serves the app.
"""
