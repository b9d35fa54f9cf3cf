"""The maintained tables the provenance detector matches metadata against. Data only, no logic.

Add a generator here (with every spelling tools are known to write) rather than a special case
in code. Patterns are matched case-insensitively as regular expressions against Software,
CreatorTool, claim generators, UserComment and similar free-text fields.
"""

from __future__ import annotations

# (canonical name, regex). Word boundaries keep "Flux" inside an unrelated word from matching.
GENERATOR_NAMES: tuple[tuple[str, str], ...] = (
    ("Stable Diffusion", r"\bstable[\s_-]?diffusion\b|\bsdxl\b|\bsd[\s_-]?(1\.5|2\.1|3(\.5)?)\b"),
    ("AUTOMATIC1111 web UI", r"\bautomatic1111\b|\bstable-diffusion-webui\b|\ba1111\b"),
    ("Forge", r"\bsd-webui-forge\b|\bstable-diffusion-webui-forge\b"),
    ("SD.Next", r"\bsd\.next\b|\bvladmandic\b"),
    ("ComfyUI", r"\bcomfy\s?ui\b"),
    ("InvokeAI", r"\binvoke\s?ai\b"),
    ("NovelAI", r"\bnovel\s?ai\b"),
    ("Fooocus", r"\bfooocus\b"),
    ("SwarmUI", r"\bswarm\s?ui\b|\bstableswarmui\b"),
    ("Draw Things", r"\bdraw\s?things\b"),
    ("DiffusionBee", r"\bdiffusion\s?bee\b"),
    ("DreamStudio", r"\bdream\s?studio\b"),
    ("Midjourney", r"\bmid\s?journey\b"),
    ("DALL-E", r"\bdall[\s·\-_.]?e\b"),
    ("OpenAI image models", r"\bopenai\b|\bchatgpt\b|\bgpt-?4o\b|\bgpt-image(-\d+)?\b|\bsora\b"),
    ("Adobe Firefly", r"\bfirefly\b"),
    ("Google Imagen / Gemini", r"\bimagen\b|\bgemini\b|\bmade with google ai\b|\bsynthid\b|\bnano[\s-]?banana\b"),
    ("Microsoft Designer / Bing Image Creator",
     r"\bbing image creator\b|\bmicrosoft designer\b|\bimage creator from designer\b"),
    ("Meta AI", r"\bimagine with meta\b|\bmeta ai\b"),
    ("xAI Grok / Aurora", r"\bgrok\b|\bxai aurora\b"),
    ("FLUX (Black Forest Labs)", r"\bblack forest labs\b|\bflux(\.1)?[\s_-]?(dev|schnell|pro|kontext)\b"),
    ("Leonardo.Ai", r"\bleonardo\.?ai\b"),
    ("Ideogram", r"\bideogram\b"),
    ("Playground AI", r"\bplayground\s?(ai|v\d)\b"),
    ("Runway", r"\brunway\s?(ml|gen-?\d)\b"),
    ("Craiyon", r"\bcraiyon\b"),
    ("NightCafe", r"\bnight\s?cafe\b"),
    ("Kandinsky", r"\bkandinsky\b"),
    ("DeepFloyd IF", r"\bdeepfloyd\b"),
    ("Recraft", r"\brecraft\b"),
    ("Krea", r"\bkrea\.?ai\b|\bkrea\b"),
    ("Tensor.Art", r"\btensor\.art\b"),
    ("SeaArt", r"\bseaart\b"),
    ("PixAI", r"\bpixai\b"),
    ("Civitai", r"\bcivitai\b"),
    ("Artbreeder", r"\bartbreeder\b"),
    ("StarryAI", r"\bstarry\s?ai\b"),
    ("Wombo Dream", r"\bwombo\b"),
    ("Hunyuan Image", r"\bhunyuan\b"),
    ("Qwen-Image", r"\bqwen[\s-]?image\b"),
    ("Seedream", r"\bseedream\b"),
)

# PNG text keys (tEXt/zTXt/iTXt) that generators write. "check" names the parser that must accept
# the value before the key counts: a bare "prompt" key alone proves nothing.
GENERATOR_TEXT_KEYS: dict[str, tuple[str, str]] = {
    "parameters": ("AUTOMATIC1111-style web UI", "a1111"),
    "prompt": ("ComfyUI", "comfy_prompt"),
    "workflow": ("ComfyUI", "comfy_workflow"),
    "invokeai_metadata": ("InvokeAI", "json_object"),
    "invokeai_graph": ("InvokeAI", "json_object"),
    "sd-metadata": ("InvokeAI (legacy)", "json_object"),
    "dream": ("InvokeAI (legacy)", "nonempty"),
    "fooocus_scheme": ("Fooocus", "nonempty"),
    "comment": ("NovelAI", "novelai_comment"),
    "generation_data": ("Tensor.Art / SeaArt", "json_object"),
}

# Keys of the A1111 "parameters" text that identify the run; kept in the evidence, prompts are not.
A1111_KEYS: tuple[str, ...] = ("Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size",
                               "Model", "Model hash", "VAE", "Version", "Denoising strength")

# Digital source types (IPTC NewsCodes, used by IPTC Photo Metadata and C2PA actions), by what
# they say about origin: "ai" trained-model output, "synthetic" other algorithmic output,
# "capture" recorded from the world by a device. Others (edits, composites of captures,
# screenshots, human digital art) are recorded but say nothing about AI generation either way.
DIGITAL_SOURCE_TYPES: dict[str, str] = {
    "trainedAlgorithmicMedia": "ai",
    "compositeWithTrainedAlgorithmicMedia": "ai",
    "algorithmicMedia": "synthetic",
    "compositeSynthetic": "synthetic",
    "dataDrivenMedia": "synthetic",
    "digitalCapture": "capture",
    "computationalCapture": "capture",
    "negativeFilm": "capture",
    "positiveFilm": "capture",
    "print": "capture",
    "compositeCapture": "capture",
    "algorithmicallyEnhanced": "neutral",
    "digitalCreation": "neutral",
    "digitalArt": "neutral",
    "humanEdits": "neutral",
    "minorHumanEdits": "neutral",
    "composite": "neutral",
    "screenCapture": "neutral",
    "virtualRecording": "neutral",
}

# EXIF Make values (prefix, case-insensitive) of camera and phone makers: weak evidence of a
# capture, since Make/Model are trivially copied onto any file.
CAMERA_MAKERS: tuple[str, ...] = (
    "apple", "asus", "blackmagic", "canon", "casio", "dji", "eastman kodak", "fujifilm", "fuji photo",
    "google", "gopro", "hasselblad", "hmd global", "honor", "htc", "huawei", "insta360", "kodak",
    "konica minolta", "leica", "lg electronics", "minolta", "motorola", "nikon", "nokia", "nothing",
    "olympus", "om digital", "oneplus", "oppo", "panasonic", "pentax", "phase one", "realme", "red digital",
    "ricoh", "samsung", "sharp", "sigma", "sony", "vivo", "xiaomi", "zeiss",
)
