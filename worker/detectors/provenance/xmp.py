"""XMP packets: IPTC ``DigitalSourceType`` and the tools named in ``CreatorTool`` / history agents.

XMP never needs a DTD, so a packet declaring one (the way entity-expansion bombs arrive) is
refused as hostile before it reaches the parser, as is a packet that is not well-formed XML.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from typing import Iterator

from worker.detectors.provenance.containers import HostileMetadata
from worker.detectors.provenance.matching import generator_named, source_type
from worker.detectors.provenance.signals import Signal

IPTC_EXT = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
SOURCE_TYPE_FIELD = f"{{{IPTC_EXT}}}DigitalSourceType"
RDF_RESOURCE = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}resource"
# qualified name -> short name, for the fields where tools name themselves
TOOL_FIELDS = {
    "{http://ns.adobe.com/xap/1.0/}CreatorTool": "xmp:CreatorTool",
    "{http://ns.adobe.com/xap/1.0/sType/ResourceEvent#}softwareAgent": "stEvt:softwareAgent",
    "{http://ns.adobe.com/tiff/1.0/}Software": "tiff:Software",
    "{http://ns.adobe.com/photoshop/1.0/}Credit": "photoshop:Credit",
}
ORIGIN_KINDS = {"ai": "iptc-ai", "synthetic": "iptc-synthetic", "capture": "iptc-capture", "neutral": "iptc-neutral"}


def xmp_signals(packet: bytes) -> list[Signal]:
    root = _parse(packet)
    signals: list[Signal] = []
    for name, value in _values(root):
        if name == SOURCE_TYPE_FIELD:
            known = source_type(value)
            kind = ORIGIN_KINDS[known[1]] if known else "info"
            signals.append(Signal(kind, "xmp", "Iptc4xmpExt:DigitalSourceType", value))
        elif name in TOOL_FIELDS:
            generator = generator_named(value)
            if generator:
                signals.append(Signal("generator-name", "xmp", TOOL_FIELDS[name], value, generator))
    return signals


def _parse(packet: bytes) -> ElementTree.Element:
    head = packet[:4096].lower()
    if b"<!doctype" in head or b"<!entity" in packet.lower():
        raise HostileMetadata("XMP declares a DTD or entities")
    try:
        return ElementTree.fromstring(packet.strip(b"\x00 \t\r\n"))
    except ElementTree.ParseError as error:
        raise HostileMetadata(f"malformed XMP: {error}") from None


def _values(root: ElementTree.Element) -> Iterator[tuple[str, str]]:
    """(qualified name, text) of every property, whether written as an attribute or an element."""
    wanted = TOOL_FIELDS.keys() | {SOURCE_TYPE_FIELD}
    for element in root.iter():
        for name, value in element.attrib.items():
            if name in wanted:
                yield name, value.strip()
        if element.tag in wanted:
            text = " ".join(part.strip() for part in element.itertext() if part.strip())
            text = text or element.attrib.get(RDF_RESOURCE, "").strip()
            if text:
                yield element.tag, text
