"""Job records live beside their videos in any fsspec store; old ones expire."""

from __future__ import annotations

from pathlib import Path

import fsspec

from videogen import GenerationParams, VideoJob, VideoStore, new_job_id


def job(created_at: int = 100, expires_at: int | None = None) -> VideoJob:
    params = GenerationParams(
        prompt="a cat",
        width=32,
        height=32,
        num_frames=5,
        fps=16,
        num_inference_steps=2,
        guidance_scale=5.0,
        seed=0,
    )
    return VideoJob(
        id=new_job_id(),
        model="tiny-wan",
        created_at=created_at,
        expires_at=expires_at,
        params=params,
    )


def test_a_record_and_its_video_round_trip_through_a_memory_store() -> None:
    store = VideoStore(f"memory://videos-{new_job_id()}")
    made = job()
    store.save_job(made)
    store.save_video(made.id, b"mp4 bytes", b"webp bytes")
    assert store.load_job(made.id) == made
    assert store.load_video(made.id) == b"mp4 bytes"
    assert store.load_video(made.id, "thumbnail") == b"webp bytes"
    assert [j.id for j in store.list_jobs()] == [made.id]
    store.delete(made.id)
    assert store.load_job(made.id) is None and store.load_video(made.id) is None
    store.delete(made.id)  # deleting what is gone is fine


def test_ids_that_are_not_job_ids_are_never_paths() -> None:
    store = VideoStore(f"memory://videos-{new_job_id()}")
    for bad in ("../etc/passwd", "video_x", "", "video_" + "0" * 31 + "/"):
        assert store.load_job(bad) is None
        assert store.load_video(bad) is None


def test_expired_jobs_and_their_videos_are_deleted_and_the_rest_kept() -> None:
    store = VideoStore(f"memory://videos-{new_job_id()}")
    old, fresh, forever = job(expires_at=50), job(expires_at=500), job()
    for made in (old, fresh, forever):
        store.save_job(made)
        store.save_video(made.id, b"v", b"t")
    assert store.expire(now=100) == [old.id]
    assert {j.id for j in store.list_jobs()} == {fresh.id, forever.id}
    assert store.load_video(old.id) is None


def test_a_local_store_is_absolute_and_leaves_no_temporary_files(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = VideoStore("videos")
    assert store.url == str(tmp_path / "videos")
    made = job()
    store.save_job(made)
    made.progress = 50
    store.save_job(made)
    assert VideoStore(store.url).load_job(made.id).progress == 50
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == [f"{made.id}.json"]
    assert fsspec.filesystem("file").exists(store.url)
