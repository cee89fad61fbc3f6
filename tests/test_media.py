"""avfusion.media reads real media (PyAV) at sample accuracy and fails loudly on bad files."""
from fractions import Fraction

import av
import numpy as np
import pytest
import soundfile
import torch
import torchaudio

from avfusion import audio, media, transforms
from avfusion.media import MediaError


def test_every_testdata_mp4_gives_model_inputs(testdata):
    mp4s = sorted(testdata.rglob("*.mp4"))
    assert len(mp4s) >= 20
    for path in mp4s:
        info = media.probe(path)
        centre = info.duration / 2
        frame = media.read_frame(path, centre)
        assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3, path
        assert transforms.eval_image(frame, 224).shape == (3, 224, 224), path
        wave = audio.pad_or_trim(media.read_audio(path, max(0.0, centre - 1.5), centre + 1.5))
        spec = audio.log_mel(wave)
        assert spec.shape == (1, 128, 192) and torch.isfinite(spec).all(), path
        assert spec.max() > -6.0, path  # real sound, not silence


def test_wav_window_is_sample_accurate(testdata, decoder):
    path = testdata / "deepavfusion/demos/demo1_orig.wav"
    ref, rate = soundfile.read(path, dtype="float32")
    wave = media.read_audio(path, 0.5, 1.75)
    assert wave.shape == (20000,)
    assert torch.allclose(wave, torch.from_numpy(ref[8000:28000]), atol=1e-6)
    # a window running past the end is clipped to the file (the Datasets pad it)
    assert media.read_audio(path, 2.0, 5.0).shape == (16000,)
    with pytest.raises(MediaError, match="no audio in"):
        media.read_audio(path, 3.5, 6.5)


def test_mp4_audio_matches_its_wav(testdata):
    # the demo mp4 carries the same 3 s as the wav, through AAC: same timing, small coding error
    wav, _ = soundfile.read(testdata / "deepavfusion/demos/demo2_orig.wav", dtype="float32")
    wave = media.read_audio(testdata / "deepavfusion/demos/demo2_orig.mp4", 0.0, 3.0)
    n = min(len(wave), len(wav))
    corr = np.corrcoef(wave[:n].numpy(), wav[:n])[0, 1]
    assert n >= 47000 and corr > 0.95


def _six_channel_48k(testdata):
    """A real recording at 48 kHz spread over 6 channels with different gains."""
    src, rate = soundfile.read(testdata / "sonicpi_instruments_cc0/guit_em9.flac", dtype="float32")
    mono = torch.from_numpy(src if src.ndim == 1 else src.mean(1))[: rate * 3]
    at48 = torchaudio.functional.resample(mono, rate, 48000)
    gains = torch.tensor([1.0, 0.5, 0.0, -0.25, 0.8, 0.2])
    return at48[None, :] * gains[:, None] * 0.8  # (6, T)


@pytest.fixture(params=["libsndfile", "pyav"])
def decoder(request, monkeypatch):
    """Run a test through each audio decoder: libsndfile (wav/flac/ogg fast path) and PyAV."""
    if request.param == "pyav":
        monkeypatch.setattr(media, "SOUNDFILE_SUFFIXES", set())
    return request.param


@pytest.mark.parametrize("suffix,subtype,tol", [(".wav", "FLOAT", 1e-4), (".flac", "PCM_24", 1e-4)])
def test_six_channel_48khz_is_averaged_and_resampled(tmp_path, testdata, suffix, subtype, tol, decoder):
    channels = _six_channel_48k(testdata)
    path = tmp_path / f"six{suffix}"
    soundfile.write(path, channels.T.numpy(), 48000, subtype=subtype)
    info = media.probe(path)
    assert (info.audio_rate, info.audio_channels) == (48000, 6)
    wave = media.read_audio(path, 1.0, 2.0)
    ref = torchaudio.functional.resample(channels.mean(0), 48000, 16000)[16000:32000]
    assert wave.shape == (16000,)
    assert torch.allclose(wave, ref, atol=tol), (wave - ref).abs().max()


def test_ogg_at_44khz_reads_whole_file(testdata):
    path = testdata / "tuxpaint_image_sound/stamps/animals/birds/crow.ogg"
    info = media.probe(path)
    wave = media.read_audio(path)
    assert info.audio_rate == 44100
    assert abs(len(wave) - info.audio_duration * 16000) <= 2


def test_both_decoders_agree_on_vorbis_timing(testdata, monkeypatch):
    # FFmpeg labels the first vorbis frame of this file pts=256 although its samples start at 0 and it
    # drops the last 256 samples; libsndfile reads all. PyAV reads are anchored at the stream start.
    path = testdata / "tuxpaint_image_sound/stamps/animals/mammals/pig.ogg"
    fast = media.read_audio(path, 0.1, 0.4)
    monkeypatch.setattr(media, "SOUNDFILE_SUFFIXES", set())
    slow = media.read_audio(path, 0.1, 0.4)
    assert fast.shape == slow.shape == (4800,)
    assert torch.allclose(fast, slow, atol=1e-5)


def _write_video(path, frames, fps, codec="mpeg4"):
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for i, img in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = i
            container.mux(stream.encode(vf))
        container.mux(stream.encode())


def test_one_frame_video(tmp_path, testdata):
    img = np.asarray(media.read_frame(testdata / "deepavfusion/demos/demo1_orig.png"))[:224, :224]
    path = tmp_path / "one.mp4"
    _write_video(path, [img], 25)
    for t in (None, 0.0, 1.5, 10.0):
        frame = media.read_frame(path, t)
        assert frame.shape == (224, 224, 3)
        assert np.abs(frame.astype(int) - img).mean() < 8  # the same picture through mpeg4


def test_odd_frame_rate_gives_the_nearest_frame(tmp_path, testdata):
    base = np.asarray(media.read_frame(testdata / "deepavfusion/demos/demo1_orig.png"))[:64, :64]
    fps = Fraction(30000, 1001)  # 29.97 fps, timestamps off the millisecond grid
    frames = [np.full_like(base, 10 + 20 * k) for k in range(12)]  # frame k has grey level 10 + 20 k
    path = tmp_path / "odd.mp4"
    _write_video(path, frames, fps)
    for k in (0, 3, 7, 11):
        for offset in (-0.4, 0.4):
            t = (k + offset) / float(fps)
            level = media.read_frame(path, max(t, 0.0)).mean()
            assert abs(level - (10 + 20 * k)) < 5, (k, offset, level)
    assert media.read_frame(path, 1.2).mean() == media.read_frame(path, 1.2).mean()  # deterministic


def test_missing_and_empty_files(tmp_path):
    missing = tmp_path / "nope.mp4"
    for reader in (media.read_audio, media.read_frame, media.probe):
        with pytest.raises(MediaError, match=r"nope\.mp4: file not found"):
            reader(missing)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match=r"empty\.wav: file is empty"):
        media.read_audio(empty)
    with pytest.raises(MediaError, match=r"nope\.jpg: file not found"):
        media.read_frame(tmp_path / "nope.jpg")


def test_truncated_mp4_raises_naming_the_file(tmp_path, testdata):
    src = testdata / "clipsep_mixtures/vggsound/3-23kti2LQUdw/av.mp4"
    # moov atom first (faststart), so a cut file still opens and the damage shows while decoding
    faststart = tmp_path / "faststart.mp4"
    with av.open(str(src)) as inp, av.open(str(faststart), "w", format="mp4",
                                           options={"movflags": "faststart"}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
    data = faststart.read_bytes()
    assert media.read_audio(faststart).shape[0] >= 64000
    for fraction in (0.3, 0.9):
        cut = tmp_path / f"cut{int(fraction * 100)}.mp4"
        cut.write_bytes(data[: int(len(data) * fraction)])
        with pytest.raises(MediaError, match=cut.name):
            media.read_audio(cut, 0.0, 4.0)
    plain = tmp_path / "plain_cut.mp4"  # moov at the end: the cut file does not even open
    plain.write_bytes(src.read_bytes()[:30000])
    with pytest.raises(MediaError, match=r"plain_cut\.mp4: cannot open"):
        media.read_frame(plain, 1.0)


def test_silent_clip_reads_as_silence(tmp_path):
    path = tmp_path / "silent.wav"
    soundfile.write(path, np.zeros(48000, dtype=np.float32), 16000, subtype="PCM_16")
    wave = media.read_audio(path, 0.0, 3.0)
    assert wave.shape == (48000,) and audio.is_silent(wave)
    assert torch.allclose(audio.log_mel(wave), torch.full((1, 128, 192), -7.0))


def test_still_image_and_no_audio_stream(tmp_path, testdata):
    png = testdata / "deepavfusion/demos/demo1_orig.png"
    frame = media.read_frame(png)
    assert frame.dtype == np.uint8 and frame.shape[2] == 3
    video_only = tmp_path / "video_only.mp4"
    _write_video(video_only, [frame[:64, :64]] * 3, 10)
    with pytest.raises(MediaError, match="no audio stream"):
        media.read_audio(video_only)


def test_media_info_command_reports_inputs_and_failures(testdata, tmp_path, capsys):
    from avfusion.cli import main

    mp4 = testdata / "deepavfusion/demos/demo1_orig.mp4"
    assert main(["media-info", str(mp4), "--image-size", "112"]) == 0
    out = capsys.readouterr().out
    assert "audio: aac, 16000 Hz, 1 ch, 3.000 s" in out and "(3, 112, 112)" in out and "(1, 128, 192)" in out
    assert main(["media-info", str(mp4), str(tmp_path / "gone.wav")]) == 3  # 3: data (issue 19)
    assert "gone.wav: file not found" in capsys.readouterr().out


def test_six_channel_48khz_aac_in_mp4(tmp_path, testdata):
    # the video-dataset path: a 5.1 AAC track at 48 kHz inside an mp4, decoded by PyAV
    channels = _six_channel_48k(testdata).numpy().astype(np.float32)  # (6, T)
    path = tmp_path / "surround.mp4"
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=48000)
        stream.layout = "5.1"
        for s in range(0, channels.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(channels[:, s:s + 1024]), format="fltp",
                                               layout="5.1")
            frame.sample_rate, frame.pts = 48000, s
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    info = media.probe(path)
    assert (info.audio_rate, info.audio_channels, info.audio_codec) == (48000, 6, "aac")
    wave = media.read_audio(path, 1.0, 2.0)
    ref = torchaudio.functional.resample(torch.from_numpy(channels).mean(0), 48000, 16000)[16000:32000]
    assert wave.shape == (16000,)
    assert np.corrcoef(wave.numpy(), ref.numpy())[0, 1] > 0.99  # lossy AAC, same timing and mix
