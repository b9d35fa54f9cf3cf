"""Builders of image files carrying every provenance signal, generated in code.

``TestSigner`` makes a throw-away root CA and an ES256 end-entity certificate with the profile
the C2PA SDK demands (X.509 v3, digitalSignature key usage, emailProtection EKU, not self-signed,
key identifiers), and signs C2PA manifests with it.
"""

from __future__ import annotations

import datetime
import io
import json
import struct
import zlib
from dataclasses import dataclass

import c2pa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from PIL import Image, PngImagePlugin

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"


def pixels(size: tuple[int, int] = (48, 32), seed: int = 1) -> Image.Image:
    image = Image.new("RGB", size)
    image.putdata([((x * 7 + seed * 31) % 256, (y * 11 + seed) % 256, (x * y + seed) % 256)
                   for y in range(size[1]) for x in range(size[0])])
    return image


def png_with_text(texts: dict[str, str], compressed: bool = False) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in texts.items():
        info.add_itxt(key, value, zip=True) if compressed else info.add_text(key, value)
    buffer = io.BytesIO()
    pixels().save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with_raw_chunk(kind: bytes, body: bytes) -> bytes:
    """A PNG with one hand-made chunk right after IHDR (for hostile sizes Pillow would refuse to write)."""
    plain = png_with_text({})
    ihdr_end = 8 + 8 + 13 + 4
    return plain[:ihdr_end] + png_chunk(kind, body) + plain[ihdr_end:]


def jpeg(exif: Image.Exif | None = None, quality: int = 90, image: Image.Image | None = None) -> bytes:
    buffer = io.BytesIO()
    (image or pixels()).save(buffer, "JPEG", quality=quality, **({"exif": exif.tobytes()} if exif is not None else {}))
    return buffer.getvalue()


def with_segment(jpeg_bytes: bytes, marker: int, payload: bytes) -> bytes:
    """``jpeg_bytes`` with one more marker segment right after SOI."""
    return jpeg_bytes[:2] + bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload + jpeg_bytes[2:]


def xmp_packet(source_type: str | None = None, creator_tool: str | None = None) -> bytes:
    attributes = ""
    if source_type:
        attributes += f' Iptc4xmpExt:DigitalSourceType="{IPTC}{source_type}"'
    if creator_tool:
        attributes += f' xmp:CreatorTool="{creator_tool}"'
    return (
        '<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"'
        f' xmlns:xmp="http://ns.adobe.com/xap/1.0/"{attributes}/>'
        '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode()


def jpeg_with_xmp(packet: bytes) -> bytes:
    return with_segment(jpeg(), 0xE1, XMP_HEADER + packet)


def exif_tags(ifd0: dict[int, object], exif_ifd: dict[int, object] | None = None) -> Image.Exif:
    exif = Image.Exif()
    for tag, value in ifd0.items():
        exif[tag] = value
    if exif_ifd:
        sub = exif.get_ifd(0x8769)
        sub.update(exif_ifd)
    return exif


def camera_exif() -> Image.Exif:
    return exif_tags({0x010F: "Canon", 0x0110: "Canon EOS R5", 0x0131: "Firmware Version 1.8.1"},
                     {0x829A: 0.004, 0x829D: 2.8, 0x8827: 200, 0x9003: "2024:05:01 10:00:00"})


def comfy_prompt() -> str:
    return json.dumps({
        "3": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 20, "model": ["4", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI"}},
    })


A1111_PARAMETERS = ("a lighthouse at dusk, oil painting\nNegative prompt: blurry\n"
                    "Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 1234, Size: 768x512, "
                    "Model hash: 31e35c80fc, Model: sd_xl_base_1.0, Version: v1.7.0")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fakescan tests")])


def _usage(signing: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=signing, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=not signing,
                         crl_sign=not signing, encipher_only=False, decipher_only=False)


@dataclass
class TestSigner:
    root_pem: str
    chain_pem: str
    key_pem: str

    @classmethod
    def create(cls, common_name: str = "fakescan test signer") -> "TestSigner":
        now = datetime.datetime.now(datetime.timezone.utc)
        root_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
        valid = dict(not_before=now - datetime.timedelta(days=1), not_after=now + datetime.timedelta(days=30))
        root = (x509.CertificateBuilder()
                .subject_name(_name("fakescan test root")).issuer_name(_name("fakescan test root"))
                .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(valid["not_before"]).not_valid_after(valid["not_after"])
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(_usage(signing=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
                .sign(root_key, hashes.SHA256()))
        leaf = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(root.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(valid["not_before"]).not_valid_after(valid["not_after"])
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(_usage(signing=True), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
                               critical=False)
                .sign(root_key, hashes.SHA256()))
        pem = lambda cert: cert.public_bytes(serialization.Encoding.PEM).decode()  # noqa: E731
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
        return cls(pem(root), pem(leaf) + pem(root), key_pem)

    def sign(self, asset: bytes, mime: str, source_type: str, generator: str = "fakescan-tests 1.0") -> bytes:
        name, _, version = generator.partition(" ")
        manifest = {
            "claim_generator_info": [{"name": name, "version": version or "1"}],
            "title": "test asset",
            "assertions": [{"label": "c2pa.actions", "data": {"actions": [
                {"action": "c2pa.created", "digitalSourceType": IPTC + source_type}]}}],
        }
        context = c2pa.Context(settings=c2pa.Settings.from_dict({"builder": {"thumbnail": {"enabled": False}}}))
        signer_info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, self.chain_pem.encode(),
                                          self.key_pem.encode(), None)
        signer = c2pa.Signer.from_info(signer_info)
        output = io.BytesIO()
        with c2pa.Builder(manifest, context) as builder:
            builder.sign(signer, mime, io.BytesIO(asset), output)
        return output.getvalue()


def alter_pixels(signed_jpeg: bytes) -> bytes:
    """The signed JPEG with one byte of its entropy-coded image data changed (the manifest untouched)."""
    start = signed_jpeg.rfind(b"\xff\xda")
    end = signed_jpeg.rfind(b"\xff\xd9")
    for position in range((start + end) // 2, end):
        if signed_jpeg[position] < 0xFE and signed_jpeg[position - 1] != 0xFF:
            return signed_jpeg[:position] + bytes([signed_jpeg[position] ^ 0x01]) + signed_jpeg[position + 1:]
    raise ValueError("no byte to alter")


def corrupt_manifest(signed_jpeg: bytes) -> bytes:
    """The signed JPEG with the box header after its signature label overwritten: the store no longer parses."""
    position = signed_jpeg.index(b"c2pa.signature\x00") + 20
    return signed_jpeg[:position] + b"\xff" * 32 + signed_jpeg[position + 32:]
