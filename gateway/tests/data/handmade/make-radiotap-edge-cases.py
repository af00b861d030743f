#!/usr/bin/env python3
"""Writes radiotap-edge-cases.pcap: probe requests behind radiotap headers that the real captures
do not exercise (vendor namespaces, every standard field up to L-SIG, alignment after odd fields,
FCS, HT Control). tshark, not this script, is the judge of what they contain:

    python3 make-radiotap-edge-cases.py
    probe-oracle.sh radiotap-edge-cases.pcap > radiotap-edge-cases.pcap.probes.tsv
"""
import struct

# (alignment, size) of radiotap fields 0..27, from radiotap.org.
LAYOUT = [(8, 8), (1, 1), (1, 1), (2, 4), (2, 2), (1, 1), (1, 1), (2, 2), (2, 2), (2, 2),
          (1, 1), (1, 1), (1, 1), (1, 1), (2, 2), (2, 2), (1, 1), (1, 1), (4, 8), (1, 3),
          (4, 8), (2, 12), (8, 12), (2, 12), (2, 12), (2, 6), (1, 1), (2, 4)]
SIGNAL, CHANNEL, FLAGS = 5, 3, 1
RADIOTAP_NEXT, VENDOR_NEXT, EXT = 1 << 29, 1 << 30, 1 << 31


def radiotap(namespaces):
    """namespaces: list of ('rt', {field: bytes}) or ('vendor', skip_bytes). Fields without a
    value are zero-filled."""
    words, data = [], bytearray()
    # The data offset depends on the number of words, which is known up front.
    n_words = len(namespaces)
    at = 4 + 4 * n_words
    for i, (kind, content) in enumerate(namespaces):
        word = 0
        nxt = namespaces[i + 1][0] if i + 1 < n_words else None
        if kind == 'rt':
            for field in sorted(content):
                word |= 1 << field
                align, size = LAYOUT[field]
                pad = -at % align
                data += bytes(pad)
                value = content[field] or bytes(size)
                assert len(value) == size
                data += value
                at += pad + size
        if nxt is not None:
            word |= EXT | (VENDOR_NEXT if nxt == 'vendor' else RADIOTAP_NEXT)
            if nxt == 'vendor':
                skip = namespaces[i + 1][1]
                pad = -at % 2
                data += bytes(pad) + bytes([0x00, 0x11, 0x22, 0x00]) + struct.pack('<H', len(skip))
                data += skip
                at += pad + 6 + len(skip)
        if kind == 'vendor':
            word |= 0x0000_0003  # the vendor's own fields, inside its skip length
        words.append(word)
    header = struct.pack('<BBH', 0, 0, at) + b''.join(struct.pack('<I', w) for w in words)
    return header + bytes(data)


def probe(seq, transmitter, flags=0, ies=bytes([0, 0, 1, 1, 0x82, 50, 1, 0x0c])):
    mpdu = bytes([0x40, flags, 0, 0]) + b'\xff' * 6 + bytes(transmitter) + b'\xff' * 6
    return mpdu + struct.pack('<H', seq << 4), ies


def frame(namespaces, seq, fcs=False, order=False):
    header, ies = probe(seq, [0x0e, 0x01, 0x02, 0x03, 0x04, seq], 0x80 if order else 0)
    if order:
        header += bytes(4)  # HT Control
    return radiotap(namespaces) + header + ies + (bytes([221, 2, 0xaa, 0xbb]) if fcs else b'')


def signal(dbm):
    return struct.pack('<b', dbm)


def channel(mhz):
    return struct.pack('<HH', mhz, 0x00a0)


# HE-MU (24) is left out because tshark 4.0 takes it for 8 bytes, not 12; HE-MU-other-user (25)
# because its size is not agreed on (the parser stops there); 0-length-PSDU (26) because it says
# no frame follows (it gets a frame of its own).
STANDARD = [f for f in range(28) if f not in (24, 25, 26)]
ALL_FIELDS = {f: None for f in STANDARD}
frames = [
    # Every standard field, then one chain.
    frame([('rt', {**ALL_FIELDS, CHANNEL: channel(2412), SIGNAL: signal(-41)}),
           ('rt', {SIGNAL: signal(-43), 11: b'\x00'})], 1),
    # Every standard field but TSFT and Flags, which shifts every alignment.
    frame([('rt', {**{f: None for f in STANDARD[2:]}, CHANNEL: channel(2437),
                   SIGNAL: signal(-52)}),
           ('rt', {SIGNAL: signal(-50)}), ('rt', {SIGNAL: signal(-55)})], 2),
    # Odd-sized fields before the aligned ones: rate, FHSS, signal, noise, then XChannel, MCS,
    # A-MPDU, VHT, timestamp.
    frame([('rt', {2: None, 4: None, SIGNAL: signal(-60), 6: None, 18: None, 19: None,
                   20: None, 21: None, 22: None}), ('rt', {SIGNAL: signal(-61)})], 3),
    # A vendor namespace between the combined signal and a chain.
    frame([('rt', {CHANNEL: channel(2462), SIGNAL: signal(-62)}), ('vendor', b'\xb0' * 5),
           ('rt', {SIGNAL: signal(-63), 11: b'\x01'})], 4),
    # A vendor namespace first, before any radiotap field.
    frame([('rt', {}), ('vendor', b'\xb0' * 3), ('rt', {CHANNEL: channel(5180),
                                                          SIGNAL: signal(-70)})], 5),
    # FCS at the end, whose bytes would read as one more element.
    frame([('rt', {FLAGS: b'\x10', CHANNEL: channel(2412), SIGNAL: signal(-44)})], 6, fcs=True),
    # An HT Control field after the header (the Order bit of a management frame).
    frame([('rt', {FLAGS: b'\x00', CHANNEL: channel(2412), SIGNAL: signal(-45)})], 7,
          order=True),
    # A header with nothing in it.
    frame([('rt', {})], 8),
    # A 0-length-PSDU field: the bytes after the header are not a frame, so no probe request.
    frame([('rt', {SIGNAL: signal(-46), 26: b'\x01'})], 9),
]

with open('radiotap-edge-cases.pcap', 'wb') as out:
    out.write(struct.pack('<IHHiIII', 0xa1b2c3d4, 2, 4, 0, 0, 65535, 127))
    for i, f in enumerate(frames):
        out.write(struct.pack('<IIII', 1700000000, i, len(f), len(f)) + f)
