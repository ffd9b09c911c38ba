"""croissant.json: Croissant 1.0 metadata that ``mlcroissant`` validates without a warning and loads into
records of member images with their labels.

The ``members`` record set reads each accepted member's image out of the member shards (a FileSet of
``*.jpg`` contained in the tars) and joins it by webdataset key to its manifest row (``sample_key``), which
holds the labels. The ``manifest`` record set is every candidate, accepted, rejected or errored. The tars'
sha256 come from the manifests' metadata (the shard writer records them), so no tar is read again here.

mlcroissant caches what it extracts from a tar under ``$CROISSANT_CACHE/extract/<hash of the contentUrl>``
and never refreshes it; contentUrls here are relative, so point ``CROISSANT_CACHE`` at a fresh folder per
output (the README says so).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import pyarrow as pa

from pipeline.output.manifest import metadata as manifest_metadata
from pipeline.output.shard_files import SET_SHA256, SHARD_SHA256
from pipeline.report.contents import OutputContents
from schemas.layout import MANIFEST_DIR, SETS_DIR, SHARDS_DIR, manifest_name_of
from schemas.records import MANIFEST, SCORE_NAMES

# The Croissant 1.0 context (spec, appendix 1), plus the two terms mlcroissant's reference context also
# has: without them it warns that the context is not standard.
CONTEXT = {
    "@language": "en", "@vocab": "https://schema.org/", "sc": "https://schema.org/",
    "cr": "http://mlcommons.org/croissant/", "rai": "http://mlcommons.org/croissant/RAI/",
    "dct": "http://purl.org/dc/terms/", "citeAs": "cr:citeAs", "column": "cr:column",
    "conformsTo": "dct:conformsTo", "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"}, "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract", "field": "cr:field", "fileProperty": "cr:fileProperty", "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet", "format": "cr:format", "includes": "cr:includes", "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath", "key": "cr:key", "md5": "cr:md5", "parentField": "cr:parentField", "path": "cr:path",
    "recordSet": "cr:recordSet", "references": "cr:references", "regex": "cr:regex", "repeated": "cr:repeated",
    "replace": "cr:replace", "separator": "cr:separator", "source": "cr:source", "subField": "cr:subField",
    "transform": "cr:transform", "equivalentProperty": "cr:equivalentProperty", "samplingRate": "cr:samplingRate",
}
MEMBER_LABELS = ["set_id", "member_id", "seed_id", "concept", "axis", "attributes", "target_caption",
                 *SCORE_NAMES, "shard"]


def _type(arrow_type: pa.DataType) -> str:
    if pa.types.is_integer(arrow_type):
        return "sc:Integer"
    if pa.types.is_floating(arrow_type):
        return "sc:Float"
    if pa.types.is_boolean(arrow_type):
        return "sc:Boolean"
    return "sc:Text"


def _column(name: str) -> dict:
    return {"fileSet": {"@id": "manifest-files"}, "extract": {"column": name}}


def _field(record_set: str, name: str, data_type: str, source: dict, **extra) -> dict:
    return {"@type": "cr:Field", "@id": f"{record_set}/{name}", "name": name, "dataType": data_type,
            "source": source, **extra}


def _tar_objects(contents: OutputContents) -> list[dict]:
    storage = contents.storage
    objects = []
    for folder, key in ((SHARDS_DIR, SHARD_SHA256), (SETS_DIR, SET_SHA256)):
        for name in (n for n in storage.list(folder) if n.endswith(".tar")):
            if not storage.exists(MANIFEST_DIR, manifest_name_of(name)):
                continue  # a shard whose manifest never landed is not done (resume redoes it; verify says so)
            metadata = manifest_metadata(storage, manifest_name_of(name))
            digest = metadata[key].decode() if key in metadata else hashlib.sha256(storage.read_bytes(folder, name)).hexdigest()
            size = storage.fs.get_file_info(storage.path(folder, name)).size
            objects.append({"@type": "cr:FileObject", "@id": f"{folder}/{name}", "name": f"{folder}/{name}",
                            "contentUrl": f"{folder}/{name}", "contentSize": f"{size} B",
                            "encodingFormat": "application/x-tar", "sha256": digest})
    return objects


def _date(timestamp: float | None) -> str:
    """The run's start day (UTC), as the dataset's publication date until someone publishes it."""
    if not timestamp:  # no run record: a fixed date keeps the file reproducible
        return "1970-01-01"
    return datetime.fromtimestamp(timestamp, timezone.utc).date().isoformat()


def render_croissant(contents: OutputContents) -> dict:
    config = contents.run.get("config", {})
    card = config.get("card", {})
    name = config.get("run", {}).get("name", "counterfactory-output")
    tars = _tar_objects(contents)
    distribution = [
        *tars,
        {"@type": "cr:FileSet", "@id": "member-images", "name": "member-images",
         "description": "Accepted member images ({key}.jpg) in the member shards.",
         "containedIn": [{"@id": t["@id"]} for t in tars if t["@id"].startswith(f"{SHARDS_DIR}/")],
         "encodingFormat": "image/jpeg", "includes": "*.jpg"},
        {"@type": "cr:FileSet", "@id": "set-images", "name": "set-images",
         "description": "Each accepted set's source image ({set_id}.jpg) in the set shards.",
         "containedIn": [{"@id": t["@id"]} for t in tars if t["@id"].startswith(f"{SETS_DIR}/")],
         "encodingFormat": "image/jpeg", "includes": "*.jpg"},
        {"@type": "cr:FileSet", "@id": "manifest-files", "name": "manifest-files",
         "description": "One row per member candidate: accepted, rejected or errored, with every score.",
         "encodingFormat": "application/x-parquet", "includes": f"{MANIFEST_DIR}/*.parquet"},
    ]
    members = [
        # The key's regex keeps the extension optional: mlcroissant applies it in the join and again when
        # it reads the field, and the second time the extension is gone.
        _field("members", "key", "sc:Text",
               {"fileSet": {"@id": "member-images"}, "extract": {"fileProperty": "filename"},
                "transform": {"regex": "^([^.]+)(?:\\.jpg)?$"}},
               description="webdataset key of the member sample ({set_id}-{member_id})",
               references=_column("sample_key")),
        _field("members", "image", "sc:ImageObject",
               {"fileSet": {"@id": "member-images"}, "extract": {"fileProperty": "content"}},
               description="the accepted member image (synthetic)"),
        *(_field("members", label, _type(MANIFEST.field(label).type), _column(label)) for label in MEMBER_LABELS),
    ]
    members[MEMBER_LABELS.index("attributes") + 2]["description"] = "JSON object: attribute -> value"
    record_sets = [
        {"@type": "cr:RecordSet", "@id": "members", "name": "members", "key": {"@id": "members/key"},
         "description": "Accepted member images with their concept, axis and attribute values.", "field": members},
        {"@type": "cr:RecordSet", "@id": "manifest", "name": "manifest",
         "description": "Every member candidate, accepted, rejected or errored.",
         "field": [_field("manifest", f.name, _type(f.type), _column(f.name)) for f in MANIFEST]},
    ]
    url = card.get("url") or "https://github.com/counterfactory/counterfactory"
    creators = card.get("creators") or ["counterfactory"]
    config_hash = contents.run.get("config_hash")
    return {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": "http://mlcommons.org/croissant/1.0",
        "name": name,
        "description": (card.get("description") or "Synthetic counterfactual image sets for bias research.")
        + f" Made by counterfactory from config {config_hash}.",
        "version": card.get("version") or "1.0.0",
        "identifier": f"counterfactory-config:{config_hash}",
        "datePublished": _date(contents.run.get("started")),
        "citeAs": card.get("citation") or f"@misc{{{name.replace('-', '_')}, title={{{name}}}, "
                                          f"author={{{' and '.join(creators)}}}, note={{config {config_hash}}}}}",
        "license": card.get("license") or "not stated",
        "url": url,
        "creator": [{"@type": "sc:Person", "name": c} for c in creators],
        "isAccessibleForFree": True,
        "distribution": distribution,
        "recordSet": record_sets,
    }
