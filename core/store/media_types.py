"""OCI and DMR media types, artifact types and layer annotation keys."""

from __future__ import annotations

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"

# Docker-format config types: V0.1 unpacks by role (positional names), V0.2 by filepath annotation.
CONFIG_V01 = "application/vnd.docker.ai.model.config.v0.1+json"
CONFIG_V02 = "application/vnd.docker.ai.model.config.v0.2+json"

GGUF = "application/vnd.docker.ai.gguf.v3"
SAFETENSORS = "application/vnd.docker.ai.safetensors"
DDUF = "application/vnd.docker.ai.dduf"
MMPROJ = "application/vnd.docker.ai.mmproj"
CHAT_TEMPLATE = "application/vnd.docker.ai.chat.template.jinja"
LICENSE = "application/vnd.docker.ai.license"
MODEL_FILE = "application/vnd.docker.ai.model.file"
VLLM_CONFIG_ARCHIVE = "application/vnd.docker.ai.vllm.config.tar"
DIR_TAR = "application/vnd.docker.ai.dir.tar"

# CNCF ModelPack.
CNCF_MANIFEST_ARTIFACT = "application/vnd.cncf.model.manifest.v1+json"
CNCF_CONFIG = "application/vnd.cncf.model.config.v1+json"
CNCF_WEIGHT_RAW = "application/vnd.cncf.model.weight.v1.raw"
CNCF_WEIGHT_CONFIG_RAW = "application/vnd.cncf.model.weight.config.v1.raw"
CNCF_DOC_RAW = "application/vnd.cncf.model.doc.v1.raw"
CNCF_WEIGHT_GGUF = "application/vnd.cncf.model.weight.v1.gguf"
CNCF_WEIGHT_SAFETENSORS = "application/vnd.cncf.model.weight.v1.safetensors"

CONFIG_TYPES = frozenset({CONFIG_V01, CONFIG_V02, CNCF_CONFIG})
"""Config media types a stored model may carry."""

# Layer annotations (defined by ModelPack, written by DMR's builder on every layer).
ANNOTATION_FILEPATH = "org.cncf.model.filepath"
ANNOTATION_FILE_METADATA = "org.cncf.model.file.metadata+json"
ANNOTATION_MEDIATYPE_UNTESTED = "org.cncf.model.file.mediatype.untested"
