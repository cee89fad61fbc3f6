"""Which H.264 frames one chosen frame needs: a per-packet `skip_frame` plan for `media.read_frame`.

    plan = skip_plan(stream.codec_context.extradata, packets, chosen)  # None: not provably safe
    # plan[i] in {"DEFAULT", "NONREF", "BIDIR"} for packets[0..chosen] (decode order, from an IDR)

Decoding frame `chosen` needs the reference frames its slices' reference lists name, and theirs,
back to the IDR; nothing else. FFmpeg already lets `read_frame` skip non-reference frames
(`skip_frame=NONREF`: nothing predicts from them). This module also skips the *reference*
B-frames (x264's B-pyramid "B-refs", a quarter of a default-GOP clip) that no needed frame names,
so the chosen frame still decodes bit for bit. It reads the slice headers (SPS, PPS, and per slice
up to `dec_ref_pic_marking`, H.264 7.3.3), replays the decoded picture buffer as the standard does
(sliding-window marking, 8.2.4 list initialisation by PicNum for P and by POC for B, list
modification, truncation to `num_ref_idx_active`), and decodes a frame iff it is an I/P reference
frame, a frame some decoded frame's final lists name, or the chosen frame.

What FFmpeg does with a skipped reference frame, and why the decoded frames do not change: the
skip happens before `h264_field_start`, so the next decoded frame sees a frame_num gap and FFmpeg
inserts a stand-in with the skipped frame's frame_num (a copy of the previous reference, POC
prev + 2), marked by the same sliding window; so the buffer holds the same frame_nums as when
nothing is skipped and every PicNum-based step (P list initialisation, list modification,
sliding-window eviction) picks the same pictures. A stand-in is never named by a decoded frame's
final lists (that is how the needed set is built). The stand-ins' POC is not the skipped frame's,
so B-list initialisation (by POC) could order them differently: a B-ref is therefore skipped only
if it has left the buffer before the next decoded B-frame is decoded. The decoded frames' own POCs
are recomputed as FFmpeg does with the skips (previous POC from the last *decoded* reference) and
must equal the true ones. Anything outside this model returns None (the caller then decodes every
reference frame, as before): field pictures, POC types other than 0, long-term references or
adaptive (MMCO) marking in the decoded range, real frame_num gaps, a range that does not start at
an IDR, redundant or SP/SI slices, slice groups, MVC/SVC NAL units, mixed slice types or reference
flags within a frame, an unparsable header. Verified pixel for pixel against decoding everything
(tests/test_media.py, benchmarks' YouTube-shaped clips).
"""
from __future__ import annotations

_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}
_P, _B, _I = 0, 1, 2  # slice_type % 5 (3 = SP, 4 = SI: unsupported)


class Unsupported(Exception):
    """The stream is outside what the plan models (the caller decodes every reference frame)."""


class _Bits:
    """Exp-Golomb reader over an RBSP prefix (emulation-prevention bytes removed)."""

    __slots__ = ("v", "n", "pos")

    def __init__(self, data: bytes):
        data = data.replace(b"\x00\x00\x03", b"\x00\x00")
        self.v, self.n, self.pos = int.from_bytes(data, "big"), 8 * len(data), 0

    def u(self, k: int) -> int:
        if k == 0:
            return 0
        self.pos += k
        if self.pos > self.n:
            raise Unsupported("header runs past the bytes read")
        return (self.v >> (self.n - self.pos)) & ((1 << k) - 1)

    def ue(self) -> int:
        rest = self.n - self.pos
        rem = self.v & ((1 << rest) - 1) if rest > 0 else 0
        if rem == 0:
            raise Unsupported("header runs past the bytes read")
        zeros = rest - rem.bit_length()
        if zeros > 31:
            raise Unsupported("exp-Golomb code too long")
        self.pos += zeros
        return self.u(zeros + 1) - 1

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


_HEADER_BYTES = 512  # a slice header (with list modifications and weights) fits well within this


def _sps(rbsp: bytes) -> tuple[int, dict]:
    b = _Bits(rbsp[:_HEADER_BYTES])
    profile = b.u(8)
    b.u(16)  # constraint flags, level
    sps_id = b.ue()
    chroma_format, separate = 1, 0
    if profile in _HIGH_PROFILES:
        chroma_format = b.ue()
        if chroma_format == 3:
            separate = b.u(1)
        b.ue(), b.ue(), b.u(1)  # bit depths, qpprime_y_zero_transform_bypass
        if b.u(1):  # seq_scaling_matrix_present_flag
            for i in range(12 if chroma_format == 3 else 8):
                if b.u(1):
                    last = nxt = 8
                    for _ in range(16 if i < 6 else 64):
                        if nxt:
                            nxt = (last + b.se() + 256) % 256
                        last = nxt or last
    log2_max_frame_num = b.ue() + 4
    poc_type = b.ue()
    if poc_type != 0:
        raise Unsupported(f"pic_order_cnt_type {poc_type}")
    log2_max_poc_lsb = b.ue() + 4
    max_refs = b.ue()
    b.u(1)  # gaps_in_frame_num_value_allowed_flag
    b.ue(), b.ue()  # picture size in macroblocks
    frame_mbs_only = b.u(1)
    return sps_id, {"log2_fn": log2_max_frame_num, "log2_poc": log2_max_poc_lsb, "max_refs": max_refs,
                    "frame_mbs_only": frame_mbs_only, "separate": separate,
                    "chroma": 0 if separate else chroma_format}


def _pps(rbsp: bytes) -> tuple[int, dict]:
    b = _Bits(rbsp[:_HEADER_BYTES])
    pps_id, sps_id = b.ue(), b.ue()
    b.u(1)  # entropy_coding_mode_flag
    bottom = b.u(1)
    if b.ue():
        raise Unsupported("slice groups")
    l0, l1 = b.ue() + 1, b.ue() + 1
    weighted, bipred = b.u(1), b.u(2)
    b.se(), b.se(), b.se()  # pic_init_qp, pic_init_qs, chroma_qp_index_offset
    b.u(1), b.u(1)  # deblocking_filter_control_present, constrained_intra_pred
    redundant = b.u(1)
    return pps_id, {"sps": sps_id, "bottom": bottom, "l0": l0, "l1": l1, "weighted": weighted,
                    "bipred": bipred, "redundant": redundant}


def _slice(rbsp: bytes, nal_type: int, ref_idc: int, spss: dict, ppss: dict) -> dict:
    b = _Bits(rbsp[:_HEADER_BYTES])
    b.ue()  # first_mb_in_slice
    kind = b.ue() % 5
    if kind > _I:
        raise Unsupported("SP/SI slice")
    pps_id = b.ue()
    if pps_id not in ppss or ppss[pps_id]["sps"] not in spss:
        raise Unsupported("slice names an unknown parameter set")
    pps = ppss[pps_id]
    sps = spss[pps["sps"]]
    if sps["separate"]:
        b.u(2)
    frame_num = b.u(sps["log2_fn"])
    if not sps["frame_mbs_only"] and b.u(1):
        raise Unsupported("field picture")
    idr = nal_type == 5
    if idr:
        b.ue()
    poc_lsb = b.u(sps["log2_poc"])
    delta_bottom = b.se() if pps["bottom"] else 0
    if pps["redundant"] and b.ue():
        raise Unsupported("redundant slice")
    if kind == _B:
        b.u(1)  # direct_spatial_mv_pred_flag
    n = [pps["l0"], pps["l1"]]
    if kind != _I and b.u(1):  # num_ref_idx_active_override_flag
        n[0] = b.ue() + 1
        if kind == _B:
            n[1] = b.ue() + 1
    lists = (0, 1) if kind == _B else (0,) if kind == _P else ()
    mods: list[list[tuple[int, int]]] = [[], []]
    for lst in lists:
        if b.u(1):  # ref_pic_list_modification_flag_lX
            while True:
                idc = b.ue()
                if idc == 3:
                    break
                if idc > 1:
                    raise Unsupported("long-term reference in list modification")
                mods[lst].append((idc, b.ue()))
    if (pps["weighted"] and kind == _P) or (pps["bipred"] == 1 and kind == _B):
        b.ue()  # luma_log2_weight_denom
        if sps["chroma"]:
            b.ue()
        for lst in lists:
            for _ in range(n[lst]):
                if b.u(1):
                    b.se(), b.se()
                if sps["chroma"] and b.u(1):
                    b.se(), b.se(), b.se(), b.se()
    mmco: list[int] = []  # adaptive marking: the short-term pictures it unmarks (difference_of_pic_nums_minus1)
    if ref_idc:
        if idr:
            b.u(1)
            if b.u(1):
                raise Unsupported("long-term IDR")
        elif b.u(1):  # adaptive_ref_pic_marking_mode_flag
            while True:
                op = b.ue()
                if op == 0:
                    break
                if op != 1:
                    raise Unsupported(f"memory management operation {op}")
                mmco.append(b.ue())  # difference_of_pic_nums_minus1
            if not mmco:
                raise Unsupported("empty adaptive reference marking")
    return {"kind": kind, "frame_num": frame_num, "poc_lsb": poc_lsb, "delta_bottom": delta_bottom,
            "n": n if kind != _I else [0, 0], "mods": mods, "sps": sps, "mmco": mmco}


def _nal_units(data: bytes, size: int):
    """(type, nal_ref_idc, the first bytes of the RBSP) of each length-prefixed NAL unit."""
    i, end = 0, len(data)
    while i + size <= end:
        length = int.from_bytes(data[i:i + size], "big")
        i += size
        if length == 0 or i + length > end:
            raise Unsupported("malformed NAL length")
        head = data[i]
        yield head & 31, (head >> 5) & 3, data[i + 1:i + 1 + min(length - 1, _HEADER_BYTES)]
        i += length


def parameter_sets(extradata: bytes | None) -> tuple[int, dict, dict]:
    """(NAL length size, SPS by id, PPS by id) from an avcC record (mp4/mov/mkv H.264)."""
    if not extradata or len(extradata) < 7 or extradata[0] != 1:
        raise Unsupported("no avcC record (Annex B stream)")
    size = (extradata[4] & 3) + 1
    spss, ppss, i = {}, {}, 6
    count = extradata[5] & 31
    for kind in ("sps", "pps"):
        for _ in range(count):
            length = int.from_bytes(extradata[i:i + 2], "big")
            nal = extradata[i + 2:i + 2 + length]
            i += 2 + length
            if kind == "sps":
                sps_id, sps = _sps(nal[1:])
                spss[sps_id] = sps
            else:
                pps_id, pps = _pps(nal[1:])
                ppss[pps_id] = pps
        if kind == "sps":
            count = extradata[i]
            i += 1
    return size, spss, ppss


def _frames(extradata: bytes, packets, chosen: int) -> list[dict]:
    """Per packet: its slices' headers, whether it is a reference frame, an IDR, its slice kinds.
    Non-reference frames other than the chosen one are never decoded: only their NAL headers are
    read (every slice non-reference)."""
    size, spss, ppss = parameter_sets(extradata)
    frames = []
    for k, packet in enumerate(packets):
        slices, ref_idcs, nal_types = [], set(), set()
        for nal_type, ref_idc, rbsp in _nal_units(bytes(packet), size):
            if nal_type in (1, 5):
                ref_idcs.add(bool(ref_idc))
                nal_types.add(nal_type)
                if ref_idc or k == chosen:
                    slices.append(_slice(rbsp, nal_type, ref_idc, spss, ppss))
            elif nal_type == 7:
                sps_id, sps = _sps(rbsp)
                spss[sps_id] = sps
            elif nal_type == 8:
                pps_id, pps = _pps(rbsp)
                ppss[pps_id] = pps
            elif nal_type in (2, 3, 4, 14, 15, 20, 21):
                raise Unsupported(f"NAL unit type {nal_type}")
        if len(ref_idcs) != 1 or len(nal_types) != 1:
            raise Unsupported("packet without slices or with mixed reference flags")
        ref = ref_idcs.pop()
        frame = {"slices": slices, "ref": ref, "idr": nal_types.pop() == 5}
        if slices:
            first = slices[0]
            for sl in slices[1:]:
                if (sl["frame_num"], sl["poc_lsb"], sl["delta_bottom"], sl["mmco"]) != \
                        (first["frame_num"], first["poc_lsb"], first["delta_bottom"], first["mmco"]):
                    raise Unsupported("slices of one frame disagree")
            frame.update(kinds={sl["kind"] for sl in slices}, frame_num=first["frame_num"],
                         poc_lsb=first["poc_lsb"], delta_bottom=first["delta_bottom"], sps=first["sps"],
                         mmco=first["mmco"])
        frames.append(frame)
    return frames


def _poc(frame: dict, prev_msb: int, prev_lsb: int) -> tuple[int, int]:
    """(POC, PicOrderCntMsb) of a frame, POC type 0 (8.2.1.1)."""
    max_lsb = 1 << frame["sps"]["log2_poc"]
    lsb = frame["poc_lsb"]
    if lsb < prev_lsb and prev_lsb - lsb >= max_lsb // 2:
        msb = prev_msb + max_lsb
    elif lsb > prev_lsb and lsb - prev_lsb > max_lsb // 2:
        msb = prev_msb - max_lsb
    else:
        msb = prev_msb
    return min(msb + lsb, msb + lsb + frame["delta_bottom"]), msb


def _add_sorted(src: list, pocs: dict, limit: int, down: bool) -> list:
    """FFmpeg's `add_sorted` (h264_refs.c): the pictures of `src` (most recent first) with POC <=
    limit in descending order (`down`) or > limit ascending, one picture per POC value."""
    out = []
    while True:
        best, pick = None, None
        for j in src:
            poc = pocs[j]
            if (poc <= limit if down else poc > limit) and (best is None or (poc >= best if down else poc < best)):
                best, pick = poc, j
        if pick is None:
            return out
        out.append(pick)
        limit = best - 1 if down else best


def _lists(frame: dict, info: dict, dpb: list) -> tuple:
    """The final reference lists of every slice of `frame` as FFmpeg builds them (h264_refs.c;
    8.2.4 for a conformant buffer), as tuples of buffer entries (ids); `dpb`: the short-term
    references, oldest first; info[id] = (frame_num, POC, picture buffer)."""
    max_fn = 1 << frame["sps"]["log2_fn"]
    cur_fn, cur_poc = frame["frame_num"], frame["poc"]
    recent = dpb[::-1]  # FFmpeg's short_ref order
    pocs = {j: info[j][1] for j in dpb}
    pic_num = {j: info[j][0] - (max_fn if info[j][0] > cur_fn else 0) for j in dpb}
    out = []
    for sl in frame["slices"]:
        if sl["kind"] == _P:
            inits = [recent]
        elif sl["kind"] == _B:
            before, after = _add_sorted(recent, pocs, cur_poc, True), _add_sorted(recent, pocs, cur_poc, False)
            l0, l1 = before + after, after + before
            if len(l1) > 1 and [info[j][2] for j in l0] == [info[j][2] for j in l1]:
                l1[0], l1[1] = l1[1], l1[0]
            inits = [l0, l1]
        else:
            continue
        for lst, init in enumerate(inits):
            n = sl["n"][lst]
            refs = init[:n]
            pred = cur_fn
            for idx, (idc, diff) in enumerate(sl["mods"][lst]):
                no_wrap = pred - (diff + 1) if idc == 0 else pred + (diff + 1)
                no_wrap += max_fn if no_wrap < 0 else -max_fn if no_wrap >= max_fn else 0
                pred = no_wrap
                target = no_wrap - max_fn if no_wrap > cur_fn else no_wrap
                pic = next((j for j in dpb if pic_num[j] == target), None)
                if pic is None:
                    raise Unsupported("list modification names a frame not in the buffer")
                refs = refs[:idx] + [pic] + [j for j in refs[idx:] if j != pic]
            if len(refs) < n:
                raise Unsupported("fewer reference frames than the list's size")
            out.append(tuple(refs[:n]))
    return tuple(out)


def _replay(frames: list[dict], decode: list[bool], strict: bool) -> dict:
    """Decode the frames with decode[k] True in order, as the standard does (`strict`: every frame
    decoded; anything a conformant decoder would reject raises) or as FFmpeg's h264 decoder does
    when the others are skipped: a skipped reference frame leaves a frame_num gap, filled at the
    next decoded frame by stand-ins (a reference to the previous reference frame's picture, POC
    previous + 2, sliding-window marking; `h264_field_start`), missing MMCO targets are ignored
    and an overfull buffer drops its oldest (`ff_h264_execute_ref_pic_marking`), the POC is
    derived from the last decoded reference frame (`ff_h264_field_end`). Returns, per decoded
    frame, (its final reference lists, its POC); ids: frame index, ("gap", frame_num, k) for a
    stand-in inserted before frame k."""
    dpb: list = []
    info: dict = {}
    out: dict = {}
    prev_fn, prev_msb, prev_lsb = None, 0, 0
    for k, frame in enumerate(frames):
        if not decode[k]:
            continue
        sps = frame["sps"]
        max_fn, max_refs, fn = 1 << sps["log2_fn"], sps["max_refs"], frame["frame_num"]
        if max_refs < 1:
            raise Unsupported("max_num_ref_frames 0")
        if frame["idr"]:
            dpb, prev_msb, prev_lsb = [], 0, 0
        elif prev_fn is None:
            raise Unsupported("the range does not start at an IDR")
        elif fn != prev_fn and fn != (prev_fn + 1) % max_fn:
            if strict:
                raise Unsupported("frame_num gap in the stream")
            unwrapped = prev_fn if prev_fn <= fn else prev_fn - max_fn
            if fn - unwrapped > max_refs:
                prev_fn = (fn - max_refs - 1) % max_fn
            while fn != prev_fn and fn != (prev_fn + 1) % max_fn:
                if not dpb:
                    raise Unsupported("a stand-in without a previous reference")
                last = dpb[-1]
                prev_fn = (prev_fn + 1) % max_fn
                if len(dpb) >= max_refs:
                    dpb.pop(0)
                gap = ("gap", prev_fn, k)
                info[gap] = (prev_fn, info[last][1] + 2, info[last][2])  # shares the previous picture
                dpb.append(gap)
        frame["poc"], msb = _poc(frame, prev_msb, prev_lsb)
        out[k] = (_lists(frame, info, dpb), frame["poc"])
        prev_fn = fn
        if not frame["ref"]:
            continue
        prev_msb, prev_lsb = msb, frame["poc_lsb"]
        mmco = frame["mmco"]
        if mmco:
            for diff in mmco:
                target = (fn - diff - 1) % max_fn
                hit = [j for j in dpb if info[j][0] == target]
                if not hit and strict:
                    raise Unsupported("MMCO names a frame not in the buffer")
                dpb = [j for j in dpb if info[j][0] != target]
        elif len(dpb) >= max_refs:
            dpb.pop(0)
        dpb = [j for j in dpb if info[j][0] != fn]
        info[k] = (fn, frame["poc"], k)
        dpb.append(k)
        if len(dpb) > max_refs:
            if strict:
                raise Unsupported("more reference frames than max_num_ref_frames")
            dpb.pop(0)
    return out


def _decide(frames: list[dict], true: dict, chosen: int, placeholders: set[int]) -> tuple[list[bool], set]:
    """(decode per frame, the frames whose pixels must be exact). Exact: the chosen frame and,
    backwards in decode order, whatever the exact frames' true reference lists name. Decoded: the
    exact frames, every I/P reference frame, and the `placeholders`: reference frames decoded only
    so that they hold their place (frame_num, POC, marking) in the buffer; their pixels may differ
    from the full decode (they are not named by any exact frame's lists, which the replay checks)."""
    decode = [False] * len(frames)
    exact = {chosen}
    for k in range(chosen, -1, -1):
        frame = frames[k]
        decode[k] = k in exact or k in placeholders or (frame["ref"] and frame["kinds"] != {_B})
        if k in exact:
            exact.update(j for lst in true[k][0] for j in lst)
    return decode, exact


def skip_plan(extradata: bytes | None, packets, chosen: int) -> list[str]:
    """`skip_frame` for packets[0..chosen] (decode order, packets[0] an IDR) such that frame
    `chosen` decodes bit-identically to decoding every packet; raises Unsupported otherwise.

    Starts from the smallest set (the chosen frame, the frames its lists name, recursively, and
    the I/P reference frames), replays FFmpeg with it and, while some exact frame would get other
    reference lists or another POC than in the full decode, also decodes the last skipped
    reference frame before that frame as a placeholder (typically the previous mini-GOP's B-ref,
    whose stand-in would otherwise come first in a B-frame's POC-ordered list 0). Headers it cannot
    parse (a damaged file) raise Unsupported too, so a caller needs to handle only that."""
    try:
        return _plan(extradata, packets, chosen)
    except Unsupported:
        raise
    except Exception as err:  # noqa: BLE001 - a header that breaks the parser: no plan, never a wrong frame
        raise Unsupported(f"unparsable H.264 headers: {err!r}") from err


def _plan(extradata: bytes | None, packets, chosen: int) -> list[str]:
    frames = _frames(extradata, packets[:chosen + 1], chosen)
    if not frames[0]["idr"]:
        raise Unsupported("the range does not start at an IDR")
    # non-reference frames other than the chosen one are never decoded: leave them out of the replays
    kept = [frame["ref"] or k == chosen for k, frame in enumerate(frames)]
    true = _replay(frames, kept, strict=True)
    placeholders: set[int] = set()
    for _ in range(len(frames)):
        decode, exact = _decide(frames, true, chosen, placeholders)
        replay = _replay(frames, decode, strict=False)
        bad = next((k for k in sorted(exact) if replay[k] != true[k]), None)
        if bad is None:
            return ["DEFAULT" if decode[k] else "BIDIR" if frame["ref"] else "NONREF"
                    for k, frame in enumerate(frames)]
        skipped = [j for j in range(bad) if not decode[j] and frames[j]["ref"]]
        if not skipped:
            raise Unsupported("no skip plan reproduces the full decode")
        placeholders.add(skipped[-1])
    raise Unsupported("no skip plan reproduces the full decode")
