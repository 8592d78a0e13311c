"""Checkpoints from the Hugging Face Hub: a repo id becomes a local folder holding exactly the files asked for.

Two kinds of repo are read (told apart by `config.json`, which only the first has):

  HF CLVP     `config.json` + `model.safetensors` (or a sharded index, or `pytorch_model.bin`), e.g.
              `susnato/clvp_dev`, transformers' `ClvpModelForConditionalGeneration`.
  Tortoise    the original `.pth` files of `Manmay/tortoise-tts`, the repo Tortoise itself downloads from.
              Only the files a job needs are fetched (`TORTOISE_FILES`): codes need `autoregressive.pth` and
              `clvp2.pth`, audio adds `diffusion_decoder.pth` and `vocoder.pth`, and `cvvp.pth`, the random-voice
              generators and `hifidecoder.pth` come only when asked for.

Files go through `huggingface_hub.hf_hub_download`, so its cache (`HF_HUB_CACHE`, `cache_dir=`), `revision=`
(branch, tag or commit), `HF_HUB_OFFLINE=1` and `local_files_only=` behave as in every HF library; every file of
one call lands in the same `snapshots/<commit>/` folder, which is returned. What arrives is only fetched here:
the strict loaders (`clvp_jax.checkpoint.load`) verify it, as they verify a local folder.

A path that exists always wins over a repo id, and a string that cannot be a repo id (`./x`, `/x`, `x`,
`a/b/c`, a name ending in a weights suffix) is left to the path loaders and their messages.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from clvp_jax.checkpoint.errors import CheckpointError
from clvp_jax.checkpoint.format import HF_WEIGHT_FILES
from clvp_jax.checkpoint.infer import CONFIG_FILE as ORIGINAL_CONFIG_FILE
from clvp_jax.checkpoint.readers import shard_files

TORTOISE_REPO = "Manmay/tortoise-tts"
"""The Hub repo of the original Tortoise weights (what Tortoise's own `api.py` downloads)."""
HF_CLVP_REPO = "susnato/clvp_dev"
"""The Hub repo of transformers' CLVP checkpoint (HF format)."""

Need = Literal["codes", "audio", "cvvp", "random_voice", "hifigan"]
TORTOISE_FILES: dict[str, tuple[str, ...]] = {
    "codes": ("autoregressive.pth", "clvp2.pth"),  # conditioning, code generation and CLVP ranking
    "audio": ("autoregressive.pth", "clvp2.pth", "diffusion_decoder.pth", "vocoder.pth"),  # codes -> waveform
    "cvvp": ("cvvp.pth",),  # the optional voice-voice re-ranker
    "random_voice": ("rlg_auto.pth", "rlg_diffuser.pth"),  # the `random` voice's latent generators
    "hifigan": ("hifidecoder.pth",),  # the HiFi-GAN decoder of later Tortoise releases
}
"""Original files each job needs (`need=`)."""

# owner/name as the Hub spells them: letters, digits, '-', '_', '.'; not starting with '.' or '-'.
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".json", ".npz", ".npy")


def is_repo_id(source: str | os.PathLike) -> bool:
    """True when `source` reads as a Hub repo id (`owner/name`) and is not an existing path."""
    text = os.fspath(source)
    return bool(_REPO_ID.fullmatch(text)) and not text.endswith(_WEIGHT_SUFFIXES) and not Path(text).exists()


def resolve_checkpoint(
    source: str | os.PathLike,
    *,
    revision: str | None = None,
    need: Sequence[Need] = ("codes",),
    optional: Sequence[Need] = (),
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
) -> Path:
    """A local path for `source`: the path itself, or the Hub snapshot folder holding the files `need` asks for.

    Args:
      source: a local folder or file (returned as is when it exists or cannot be a repo id), or a Hub repo id.
      revision: branch, tag or commit of the repo (default: `main`); refused for a local path.
      need: for a Tortoise repo, which jobs' files to fetch (`TORTOISE_FILES`); an HF repo is always whole.
      optional: jobs whose files are fetched too when the repo has them and they can be had now (a file missing
        from the repo, or from the cache when offline, is skipped: `clvp-jax convert` of a repo id fetches every
        audio model this way and reports what it did not get).
      cache_dir: the Hub cache (default: `HF_HUB_CACHE`, i.e. ~/.cache/huggingface/hub).
      local_files_only: read only the cache (default: no, unless `HF_HUB_OFFLINE=1`).
    Returns:
      The folder (or file) to give the path loaders.
    Raises:
      CheckpointError: one line naming the repo, revision and files looked for, and how to get them.
    """
    if not is_repo_id(source):
        if revision is not None:
            text = os.fspath(source)
            what = (
                "an existing local path, which wins over a repo id: drop the revision, or run where it does not exist"
                if Path(text).exists()
                else "not a repo id (owner/name)"
            )
            raise CheckpointError(f"revision={revision!r} applies to a Hub repo id, but {text!r} is {what}")
        return Path(source)
    unknown = sorted((set(need) | set(optional)) - set(TORTOISE_FILES))
    if unknown:
        raise CheckpointError(f"need={unknown} is not a job; choose from {', '.join(TORTOISE_FILES)}")
    return _Fetcher(os.fspath(source), revision, cache_dir, bool(local_files_only)).checkpoint(need, optional)


class _Fetcher:
    """`hf_hub_download` for one repo and revision, turning the library's exceptions into one-line errors."""

    def __init__(self, repo: str, revision: str | None, cache_dir: str | os.PathLike | None, local_only: bool):
        self.repo, self.revision, self.cache_dir, self.local_only = repo, revision, cache_dir, local_only
        self.cache_missing: list[str] = []  # files neither in the cache nor downloadable now
        self.cause: BaseException | None = None  # why the last of them could not be downloaded
        # Set once the Hub proved unreachable: the library retries each file for ~25 s, so the rest are only
        # looked up in the cache (the error then names every missing file at once).
        self.unreachable = False

    def get(self, filename: str) -> Path | None:
        """The cached path of `filename`, or None when the repo has no such file or it cannot be had now."""
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            GatedRepoError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        try:
            return Path(
                hf_hub_download(
                    self.repo,
                    filename,
                    revision=self.revision,
                    cache_dir=self.cache_dir,
                    local_files_only=self.local_only or self.unreachable,
                )
            )
        except LocalEntryNotFoundError as err:  # before EntryNotFoundError: it is one
            if not (self.local_only or self.unreachable or _offline()):
                self.cause, self.unreachable = err.__cause__, True
            self.cache_missing.append(filename)
            return None
        except EntryNotFoundError:  # the repo (at this revision) has no such file
            return None
        except GatedRepoError as err:
            raise CheckpointError(
                f"the Hub repo {self.repo} is gated: accept its terms on huggingface.co and log in with "
                f"`hf auth login` ({_first_line(err)})"
            ) from err
        except RepositoryNotFoundError as err:
            raise CheckpointError(
                f"{self.repo!r} is neither a local path nor a Hub repo (no such repo, or it is private: log in "
                "with `hf auth login`); pass an existing folder or a repo id such as "
                f"{TORTOISE_REPO} or {HF_CLVP_REPO}"
            ) from err
        except RevisionNotFoundError as err:
            raise CheckpointError(
                f"the Hub repo {self.repo} has no revision {self.revision!r}; pass a branch, tag or commit it has"
            ) from err
        except HfHubHTTPError as err:
            raise CheckpointError(f"the Hub refused {self.repo}/{filename}: {_first_line(err)}") from err

    def checkpoint(self, need: Iterable[str], optional: Iterable[str] = ()) -> Path:
        """Fetch an HF checkpoint (config.json + weights) or the Tortoise files of `need` (and those of `optional`
        that can be had); their folder."""
        # The known Tortoise repo has no config.json: asking for it would cost a round trip (or retries offline).
        config = None if self.repo == TORTOISE_REPO else self.get("config.json")
        if config is not None:
            return self._same_folder([config, *self._hf_weights(config.parent)])
        wanted = list(dict.fromkeys(f for job in need for f in TORTOISE_FILES[job]))
        found = {name: self.get(name) for name in wanted}
        if all(found.values()):
            extra = [ORIGINAL_CONFIG_FILE]  # the constructors' kwargs, when the repo has them
            extra += [f for job in optional for f in TORTOISE_FILES[job] if f not in found and f not in extra]
            got = [path for path in map(self.get, extra) if path is not None]
            self.cache_missing = [f for f in self.cache_missing if f not in extra]
            return self._same_folder([*found.values(), *got])
        missing = [name for name, path in found.items() if path is None]
        if "config.json" in self.cache_missing and len(missing) == len(wanted) and not self._cached_tortoise():
            # Nothing of the repo could be had: its kind is unknown, so name both layouts.
            looked_for = f"config.json + model.safetensors (HF CLVP) or {', '.join(wanted)} (original Tortoise)"
            raise CheckpointError(self._unavailable(looked_for, None))
        if set(missing) <= set(self.cache_missing):
            raise CheckpointError(self._unavailable(", ".join(missing), missing))
        raise CheckpointError(
            f"the Hub repo {self.repo}{self._at()} holds no {', '.join(missing)} and no config.json: it is neither "
            f"an HF CLVP checkpoint nor the original Tortoise files (e.g. {TORTOISE_REPO}, {HF_CLVP_REPO})"
        )

    def _hf_weights(self, folder: Path) -> list[Path]:
        """The weight files of an HF repo: the first of `HF_WEIGHT_FILES` it has, and an index's shards."""
        for name in HF_WEIGHT_FILES:
            path = self.get(name)
            if path is None:
                continue
            if not name.endswith(".index.json"):
                return [path]
            shards = [self.get(shard) for shard in shard_files(path)]
            if not all(shards):
                missing = [s for s, p in zip(shard_files(path), shards, strict=True) if p is None]
                raise CheckpointError(self._unavailable(", ".join(missing), missing))
            return [path, *shards]
        if self.cache_missing:
            raise CheckpointError(self._unavailable(" or ".join(HF_WEIGHT_FILES), None))  # which one: unknown offline
        raise CheckpointError(
            f"the Hub repo {self.repo}{self._at()} has a config.json but none of {', '.join(HF_WEIGHT_FILES)}"
        )

    def _cached_tortoise(self) -> bool:
        """Whether the cache holds any original Tortoise file of this repo and revision (then it is that kind)."""
        from huggingface_hub import try_to_load_from_cache

        names = {f for files in TORTOISE_FILES.values() for f in files}
        kwargs = dict(cache_dir=self.cache_dir, revision=self.revision)
        return any(isinstance(try_to_load_from_cache(self.repo, f, **kwargs), str) for f in names)

    def _same_folder(self, paths: list[Path]) -> Path:
        folders = {p.parent for p in paths}
        if len(folders) != 1:  # the branch moved between two downloads
            raise CheckpointError(
                f"the Hub repo {self.repo} changed while its files were fetched; pass revision=<commit> (--revision)"
            )
        return folders.pop()

    def _at(self) -> str:
        return f" (revision {self.revision})" if self.revision else ""

    def _unavailable(self, looked_for: str, files: Sequence[str] | None) -> str:
        """The one line for files that are not in the cache and cannot be downloaded now."""
        from huggingface_hub import constants

        cache = os.fspath(self.cache_dir) if self.cache_dir is not None else constants.HF_HUB_CACHE
        if self.local_only:
            why = "downloads are off (local_files_only=True)"
        elif _offline():
            why = "downloads are off (HF_HUB_OFFLINE=1)"
        else:
            why = f"the Hub could not be reached ({_first_line(self.cause) or 'no connection'})"
        command = " ".join(["hf download", self.repo, *(files or [])])
        command += f" --revision {self.revision}" if self.revision else ""
        return (
            f"Hub repo {self.repo}{self._at()}: {looked_for} not in the Hub cache {cache} and {why}; get them with "
            f"the network, with `{command}`, or pass a local folder that holds them"
        )


def _offline() -> bool:
    """`HF_HUB_OFFLINE` as `huggingface_hub` read it (at its import)."""
    from huggingface_hub import constants

    return constants.is_offline_mode()


def _first_line(err: BaseException | None) -> str:
    return str(err).strip().splitlines()[0] if err is not None and str(err).strip() else ""
