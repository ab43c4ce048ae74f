"""Where config.pretrained's weights are: a safetensors file or folder, or a timm tag in
the Hugging Face hub cache (codext.train.resolve_pretrained)."""
import glob
import os


def _hf_cache_dirs():
    """[(label, dir or None)] where the Hugging Face hub cache may be, in lookup order."""
    home = os.path.expanduser("~")
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
    hf_home = os.environ.get("HF_HOME")
    return [("$HF_HUB_CACHE", os.environ.get("HF_HUB_CACHE")),
            ("$HUGGINGFACE_HUB_CACHE", os.environ.get("HUGGINGFACE_HUB_CACHE")),
            ("$HF_HOME/hub", os.path.join(hf_home, "hub") if hf_home else None),
            ("default cache", os.path.join(xdg, "huggingface", "hub"))]


def resolve_pretrained(spec):
    """The safetensors file for config.pretrained: an existing file path (or a folder
    holding model.safetensors), or a timm tag such as "edgenext_base.in21k_ft_in1k" (also
    "timm/<tag>" or "hf-hub:timm/<tag>") found in the Hugging Face hub cache as
    models--timm--<tag>/snapshots/<revision>/model.safetensors (the revision refs/main
    points to first). Raises FileNotFoundError listing every place searched."""
    spec = os.fspath(spec)
    path = os.path.expanduser(spec)
    searched = []
    if os.path.isfile(path):
        return path
    if os.path.isdir(path):
        inside = os.path.join(path, "model.safetensors")
        if os.path.isfile(inside):
            return inside
        searched.append(inside)
    else:
        searched.append(path)
    tag = spec
    for prefix in ("hf-hub:", "hf_hub:", "timm/"):
        if tag.startswith(prefix):
            tag = tag[len(prefix):]
    if tag.startswith("timm/"):
        tag = tag[len("timm/"):]
    if tag and "/" not in tag and os.sep not in tag and not tag.endswith(".safetensors"):
        seen = set()
        for label, cache in _hf_cache_dirs():
            if not cache:
                searched.append(f"{label} (not set)")
                continue
            if cache in seen:
                continue
            seen.add(cache)
            repo = os.path.join(cache, f"models--timm--{tag}")
            try:
                with open(os.path.join(repo, "refs", "main")) as f:
                    main = os.path.join(repo, "snapshots", f.read().strip(), "model.safetensors")
                if os.path.isfile(main):
                    return main
            except OSError:
                pass
            pattern = os.path.join(repo, "snapshots", "*", "model.safetensors")
            hits = [h for h in glob.glob(pattern) if os.path.isfile(h)]
            if hits:
                return max(hits, key=os.path.getmtime)
            searched.append(pattern)
    raise FileNotFoundError(
        f"pretrained weights {spec!r} not found. Searched:\n  " + "\n  ".join(searched) +
        "\nGive a path to a timm model.safetensors, or download the tag first, e.g. "
        "`huggingface-cli download timm/<tag> model.safetensors` (on Kaggle: add the model "
        "as an input and pass its path).")
