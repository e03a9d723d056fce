"""Load a tokenizer from a local directory, offline, as a transformers fast tokenizer.

Two layouts are supported:
- a directory with ``tokenizer.json`` (any model saved by ``tokenizers``/transformers, e.g.
  glm-4-9b-chat-hf): loaded with ``AutoTokenizer(local_files_only=True)`` (``PreTrainedTokenizerFast``
  when the config names no other class, which spares the import of torch);
- glm-4-9b-chat's original layout: the tiktoken vocabulary ``tokenizer.model`` (``base64 rank``
  lines), ``tokenizer_config.json`` (special tokens and their ids) and optionally ``pat_str.txt``.
  Its ``ChatGLM4Tokenizer`` is remote code we do not run; instead the vocabulary is converted
  with transformers' ``TikTokenConverter`` into a fast tokenizer with the same ids. The
  conversion is cached as ``tokenizer.json`` under ``cache_dir()``, keyed by the input files'
  hash.

``tiktoken_encoding`` gives a tiktoken encoding with the same ids for the tiktoken files, and for a
``tokenizer.json`` that is a byte-level BPE tiktoken encodes alike (``glmdata.masks`` encodes with it:
about twice as fast).

The network is never used. transformers and tokenizers are imported inside the functions, so
``import glmdata.tokenizer`` stays light.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import tempfile
import weakref
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from glmdata import jsontext

__all__ = ["GLM4_PAT_STR", "TokenizerError", "cache_dir", "load_tokenizer", "tiktoken_encoding"]

#: The pre-tokenizer regex of ChatGLM4Tokenizer (``tokenization_chatglm.py``, also ``pat_str.txt``),
#: used when the directory has no ``pat_str.txt``.
GLM4_PAT_STR = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Bump when the conversion changes, so stale cached tokenizer.json files are not reused.
_CONVERSION_VERSION = "1"
_TIKTOKEN_LINE = re.compile(rb"^[A-Za-z0-9+/]+=*\s+\d+\s*$")

# tokenizer_class values for which AutoTokenizer gives the plain fast tokenizer.
_GENERIC_CLASSES = (None, "PreTrainedTokenizerFast", "TokenizersBackend")
_LAYOUTS = "tokenizer.json, or glm-4-9b-chat's tiktoken files (tokenizer.model with tokenizer_config.json)"


class TokenizerError(ValueError):
    """No usable tokenizer at the given path; the message says what was looked for and how to fix it."""


def cache_dir() -> Path:
    """Where converted tokenizers are cached: ``$GLMDATA_CACHE_DIR``, else ``$XDG_CACHE_HOME/glmdata``
    (default ``~/.cache/glmdata``)."""
    if os.environ.get("GLMDATA_CACHE_DIR"):
        return Path(os.environ["GLMDATA_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "glmdata"


def load_tokenizer(path: str | Path) -> Any:
    """Load the tokenizer in local directory ``path`` as a ``PreTrainedTokenizerFast``.

    ``path`` may also name a file inside such a directory (``tokenizer.json``,
    ``tokenizer_config.json``, ``tokenizer.model``). For glm-4-9b-chat's tiktoken layout the
    result has the original ids (``[gMASK]`` 151331, ``<sop>`` 151333, ``<|user|>`` 151336,
    ``<|assistant|>`` 151337, ...), the special tokens and settings of ``tokenizer_config.json``,
    and the directory's chat template (``chat_template.jinja``, else ``tokenizer_config.json``).
    Never touches the network. Raises ``TokenizerError`` (never a hub traceback) when nothing
    usable is found or the files cannot be loaded.
    """
    directory = Path(path).expanduser()
    if not directory.exists():
        raise TokenizerError(
            f"tokenizer path {str(path)!r} does not exist; pass a local tokenizer directory "
            f"containing {_LAYOUTS} (a model downloaded with `hf download MODEL --local-dir DIR`)"
        )
    if directory.is_file():
        directory = directory.parent
    _require_tokenizer_extra()
    if (directory / "tokenizer.json").is_file():
        return _load_tokenizer_json(directory)
    model_file = directory / "tokenizer.model"
    if model_file.is_file() and _is_tiktoken_file(model_file):
        return _load_tiktoken(directory)
    found = ", ".join(sorted(p.name for p in directory.iterdir())[:12]) or "nothing"
    raise TokenizerError(
        f"no usable tokenizer in {directory}: looked for {_LAYOUTS}; found {found}. "
        "Pass the model's tokenizer directory"
    )


def _require_tokenizer_extra() -> None:
    """Token counts need transformers, tokenizers and tiktoken (the ``tokenizer`` extra), which
    glmdata itself does not: say how to install them rather than fail on an import."""
    import importlib.util

    missing = [name for name in ("transformers", "tokenizers", "tiktoken") if importlib.util.find_spec(name) is None]
    if missing:
        raise TokenizerError(
            f"tokenizers need {', '.join(missing)}, not installed: pip install 'glmdata[tokenizer]' "
            "(from a checkout: pip install -e '.[tokenizer]'); without --tokenizer, lengths are counted in characters"
        )


def _is_tiktoken_file(path: Path) -> bool:
    with open(path, "rb") as f:
        first = f.readline(4096)
    return bool(_TIKTOKEN_LINE.match(first))


def _load_tokenizer_json(directory: Path) -> Any:
    from transformers import PreTrainedTokenizerFast

    config = directory / "tokenizer_config.json"
    named = _read_json(config).get("tokenizer_class") if config.is_file() else None
    try:
        if named in _GENERIC_CLASSES:  # AutoTokenizer would give the same class, and import torch (2 s)
            tokenizer = PreTrainedTokenizerFast.from_pretrained(str(directory), local_files_only=True)
        else:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except Exception:
        # AutoTokenizer refuses configs naming a remote-code class (auto_map) without
        # trust_remote_code; tokenizer.json alone is enough for the fast tokenizer.
        try:
            tokenizer = PreTrainedTokenizerFast.from_pretrained(str(directory), local_files_only=True)
        except Exception as e:  # one line for the user, not a library traceback
            raise TokenizerError(f"cannot load the tokenizer in {directory}: {type(e).__name__}: {e}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise TokenizerError(
            f"the tokenizer in {directory} loaded as a slow tokenizer ({type(tokenizer).__name__}); "
            "glmdata needs a fast one (loss masks are encoded with its tokenizers backend)"
        )
    path = directory / "tokenizer.json"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    specials = sorted((i, t.__getstate__()) for i, t in tokenizer.backend_tokenizer.get_added_tokens_decoder().items())
    _register(tokenizer, _TiktokenSource(digest, specials, len(tokenizer), partial(_bpe_ranks, path, digest)))
    return tokenizer


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise TokenizerError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise TokenizerError(f"{path} is not a JSON object")
    return data


def _special_tokens(config: dict, config_path: Path) -> list[tuple[int, dict]]:
    decoder = config.get("added_tokens_decoder")
    if not isinstance(decoder, dict) or not decoder:
        raise TokenizerError(
            f"{config_path} has no added_tokens_decoder: the special tokens and their ids "
            "([gMASK], <sop>, <|user|>, ...) are needed to convert tokenizer.model"
        )
    try:
        tokens = sorted((int(i), t) for i, t in decoder.items())
    except (TypeError, ValueError):
        raise TokenizerError(f"{config_path}: added_tokens_decoder keys must be token ids") from None
    return tokens


def _load_tiktoken(directory: Path) -> Any:
    from transformers import PreTrainedTokenizerFast

    config_path = directory / "tokenizer_config.json"
    if not config_path.is_file():
        raise TokenizerError(
            f"{directory} has tokenizer.model but no tokenizer_config.json; both are needed "
            "(the config lists the special tokens and their ids)"
        )
    config = _read_json(config_path)
    specials = _special_tokens(config, config_path)
    pat_file = directory / "pat_str.txt"
    pattern = pat_file.read_text(encoding="utf-8") if pat_file.is_file() else GLM4_PAT_STR
    model_bytes = (directory / "tokenizer.model").read_bytes()

    key = hashlib.sha256()
    for part in (_CONVERSION_VERSION.encode(), model_bytes, pattern.encode(), json.dumps(specials).encode()):
        key.update(hashlib.sha256(part).digest())
    cached = cache_dir() / "tokenizers" / key.hexdigest()[:32] / "tokenizer.json"
    backend = None
    if not cached.is_file():
        backend = _convert_tiktoken(directory / "tokenizer.model", pattern, specials)
        _save_atomically(cached, backend.save)

    chat_template = None
    if (directory / "chat_template.jinja").is_file():
        chat_template = (directory / "chat_template.jinja").read_text(encoding="utf-8")
    elif isinstance(config.get("chat_template"), str):
        chat_template = config["chat_template"]

    settings = {
        name: config[name]
        for name in ("eos_token", "pad_token", "bos_token", "unk_token", "padding_side", "clean_up_tokenization_spaces")
        if isinstance(config.get(name), (str, bool))
    }
    if isinstance(config.get("model_max_length"), int):
        settings["model_max_length"] = config["model_max_length"]
    extra = config.get("additional_special_tokens") or config.get("extra_special_tokens")
    if isinstance(extra, list):
        settings["extra_special_tokens"] = extra
    # from the cached file when there is one: a tokenizer object would be deep-copied (0.8 s)
    source = {"tokenizer_file": str(cached)} if cached.is_file() else {"tokenizer_object": backend}
    tokenizer = PreTrainedTokenizerFast(**source, chat_template=chat_template, **settings)
    model_file, model_sha256 = directory / "tokenizer.model", hashlib.sha256(model_bytes).hexdigest()
    ranks = partial(_tiktoken_ranks, model_file, model_sha256, pattern)
    _register(tokenizer, _TiktokenSource(key.hexdigest(), specials, len(tokenizer), ranks))
    return tokenizer


Ranks = tuple[str, dict[bytes, int]]  # tiktoken's pattern and mergeable ranks


class _TiktokenSource:
    """How tiktoken can encode a tokenizer that ``load_tokenizer`` gave: its vocabulary's key, special
    tokens, size at load time, and ``ranks()`` to read its pattern and ranks (``None``: it cannot)."""

    def __init__(self, key: str, specials: list[tuple[int, dict]], size: int, ranks: Callable[[], Ranks | None]):
        self.key, self.specials, self.size, self.ranks = key, specials, size, ranks
        contents = [t["content"] for _, t in specials]
        # tiktoken matches special tokens exactly, without stripping spaces around them, and where
        # one begins another which of the two it matches is not defined (the tokenizer takes the longer).
        self.same_specials = not any(
            t.get(flag) for _, t in specials for flag in ("lstrip", "rstrip", "single_word")
        ) and not any(a != b and b.startswith(a) for a in contents for b in contents)


# Tokenizers that `load_tokenizer` gave -> their source; encodings by source key (False: none).
_TIKTOKEN_SOURCES: weakref.WeakKeyDictionary[Any, _TiktokenSource] = weakref.WeakKeyDictionary()
_TIKTOKEN_ENCODINGS: dict[str, Any] = {}


def _register(tokenizer: Any, source: _TiktokenSource) -> None:
    try:
        _TIKTOKEN_SOURCES[tokenizer] = source
    except TypeError:  # not weak-referenceable: no tiktoken fast path for it
        pass


def tiktoken_encoding(tokenizer: Any) -> Any | None:
    """A tiktoken encoding that gives ``tokenizer``'s ids, or ``None``.

    For glm-4-9b-chat's tiktoken files, their own encoding (``ChatGLM4Tokenizer`` encodes with
    tiktoken); for a ``tokenizer.json``, one built from its vocabulary when it is a byte-level BPE
    that tiktoken encodes alike (``_bpe_ranks``: glm-4-9b-chat-hf's, which was converted from those
    files). The tokenizers library is about half as fast on this vocabulary (tests hold the two to
    each other), so ``glmdata.masks`` encodes with this when it can. ``None`` when the tokenizer was
    not loaded by ``load_tokenizer``, when tiktoken is not installed, when tokens were added to the
    tokenizer since it was loaded, when it is set to split special tokens, when a special token
    strips the spaces around it, or when one special token begins another: the ids could then differ.
    """
    try:
        source = _TIKTOKEN_SOURCES.get(tokenizer)
    except TypeError:
        return None
    if source is None or len(tokenizer) != source.size or getattr(tokenizer, "split_special_tokens", False):
        return None
    if not source.same_specials:
        return None
    encoding = _TIKTOKEN_ENCODINGS.get(source.key)
    if encoding is None:
        try:
            import tiktoken
        except ImportError:
            return None
        try:
            found = source.ranks()
            encoding = found is not None and tiktoken.Encoding(
                name=f"glmdata-{source.key[:12]}",
                pat_str=found[0],
                mergeable_ranks=found[1],
                special_tokens={t["content"]: i for i, t in source.specials},
            )
        except Exception:  # unreadable now, or tiktoken refuses it: use the tokenizer
            encoding = False
        _TIKTOKEN_ENCODINGS[source.key] = encoding
    return encoding or None


def _tiktoken_ranks(model_file: Path, sha256: str, pattern: str) -> Ranks | None:
    data = model_file.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        return None  # the file changed since the tokenizer was loaded
    return pattern, {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in data.splitlines() if line.strip())
    }


def _bpe_ranks(path: Path, sha256: str) -> Ranks | None:
    """tiktoken's pattern and ranks for the ``tokenizer.json`` at ``path`` when tiktoken encodes it to
    the same ids, else ``None``: no normalizer; one regex split then bytes (what TikTokenConverter
    writes); a BPE whose merges are every pair of tokens that makes a token, in the order of the token
    they make (tiktoken merges by that token's rank, the tokenizers library in the list's order), and
    a token for a piece found whole (``ignore_merges``). Checking the merges takes about a second; the
    verdict is kept under ``cache_dir()``."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        return None
    spec = jsontext.loads(data)
    model, pre = spec.get("model") or {}, spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else None
    flags = ("dropout", "continuing_subword_prefix", "end_of_word_suffix", "byte_fallback")
    if spec.get("normalizer") or model.get("type") != "BPE" or not model.get("ignore_merges"):
        return None
    if any(model.get(flag) for flag in flags) or not isinstance(steps, list) or len(steps) != 2:
        return None
    split, byte_level = steps
    pattern = (split.get("pattern") or {}).get("Regex")
    if split.get("type") != "Split" or split.get("behavior") != "Isolated" or split.get("invert") or not pattern:
        return None
    if byte_level.get("type") != "ByteLevel" or byte_level.get("add_prefix_space") or byte_level.get("use_regex"):
        return None
    vocab: dict[str, int] = model["vocab"]
    alphabet = {c: chr(b) for b, c in bytes_to_unicode().items()}
    if not set("".join(vocab)) <= alphabet.keys() or sorted(vocab.values()) != list(range(len(vocab))):
        return None
    verdict = cache_dir() / "tiktoken-equivalent" / sha256
    known = verdict.read_text() if verdict.is_file() else None
    if known is None:
        known = "yes" if _merges_are_ranks(vocab, model.get("merges") or []) else "no"
        _save_atomically(verdict, lambda tmp: Path(tmp).write_text(known))
    if known != "yes":
        return None
    table = str.maketrans(alphabet)
    return pattern, {token.translate(table).encode("latin-1"): i for token, i in vocab.items()}


def _merges_are_ranks(vocab: dict[str, int], merges: list) -> bool:
    pairs = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]
    made = [vocab.get(a + b, -1) for a, b in pairs]
    if -1 in made or made != sorted(made):
        return False
    known = set(pairs)
    return all((t[:k], t[k:]) in known for t in vocab for k in range(1, len(t)) if t[:k] in vocab and t[k:] in vocab)


def _convert_tiktoken(model_file: Path, pattern: str, specials: list[tuple[int, dict]]) -> Any:
    from tokenizers import AddedToken
    from transformers.convert_slow_tokenizer import TikTokenConverter

    try:
        backend = TikTokenConverter(vocab_file=str(model_file), pattern=pattern).converted()
    except Exception as e:  # one line for the user, not a library traceback
        raise TokenizerError(f"cannot convert {model_file} (tiktoken vocabulary): {type(e).__name__}: {e}") from None
    vocab_size = backend.get_vocab_size(with_added_tokens=False)
    expected = list(range(vocab_size, vocab_size + len(specials)))
    if [i for i, _ in specials] != expected:
        # New tokens get the next free ids, so the config's ids must continue the vocabulary.
        raise TokenizerError(
            f"special token ids in tokenizer_config.json must be {vocab_size}..{vocab_size + len(specials) - 1} "
            f"(right after the {vocab_size} ranks of {model_file.name}); got {[i for i, _ in specials]}"
        )
    backend.add_special_tokens(
        [
            AddedToken(
                t["content"],
                single_word=t.get("single_word", False),
                lstrip=t.get("lstrip", False),
                rstrip=t.get("rstrip", False),
                normalized=t.get("normalized", False),
                special=t.get("special", True),
            )
            for _, t in specials
        ]
    )
    for i, t in specials:
        if backend.token_to_id(t["content"]) != i:
            raise TokenizerError(
                f"special token {t['content']!r} got id {backend.token_to_id(t['content'])}, expected {i}"
            )
    return backend


def _save_atomically(target: Path, write: Callable[[str], Any]) -> None:
    """``write(temporary path)``, then the file renamed to ``target``. A cache is an optimisation: if it
    cannot be written (read-only home), carry on without it."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        os.close(fd)
        write(tmp)
        os.replace(tmp, target)
    except OSError:
        pass
