"""The multimodal model: Perceiver encoder, host-photometry path and three heads.

``trunk = concat(encoder(tokens), host_path(host tokens))`` (n, 2d) feeds the class
head and the photo-z mixture head; the anomaly score is an isolation forest over the
context ``[trunk, logits]`` and light-curve descriptors (:mod:`models.anomaly`).
Calibration constants and the forest are registered buffers, so they travel in the
``state_dict`` of a checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from broker.features.core import LEGACY_SETTINGS, FeatureConfig
from broker.features.registry import FEATURE_NAMES
from broker.tokens import FEAT_FIELDS, HOST_KIND_MAG, LC_FIELDS
from models.anomaly import DESCRIPTORS, AnomalyForest, ForestConfig
from models.embedding import EmbeddingProjection
from models.encoder import EncoderConfig, PerceiverEncoder
from models.forecast import ForecastHead
from models.heads import HostPath, MixtureHead, ReconHead, mixture_summary
from models.images import RealBogusHead
from models.luminosity import LuminosityPrior
from models.neighbours import NeighbourBank, NeighbourConfig
from models.photoz_lc import LcRedshift
from models.photoz_prior import SelectionPrior
from models.photoz_student import HostPhotozStudent
from models.physics import PhysicsConfig, PhysicsDensity
from models.ssl import ContrastiveHead

TOKEN_KEYS: tuple[str, ...] = ("lc", "lc_mask", "host", "host_mask", "feat", "feat_mask")
#: Optional image tokens (cutouts), read by models built with ``EncoderConfig.images``.
IMAGE_KEYS: tuple[str, ...] = ("img", "img_mask")


@dataclass(frozen=True)
class ModelConfig:
    """Model hyper-parameters (stored in checkpoints).

    Attributes
    ----------
    encoder : EncoderConfig
    n_classes : int
        Output classes ``K``.
    n_components : int
        Gaussians in the photo-z mixture.
    forest : ForestConfig
        Size of the anomaly isolation forest.
    neighbours : NeighbourConfig
        Size of the embedding neighbour bank and which anomaly score is served.
    real_bogus : bool
        Has a real/bogus head (:class:`models.images.RealBogusHead`), trained on simulated
        artefacts (``alertbroker train --bogus-fraction``).
    physics : PhysicsConfig
        The physics density (:mod:`models.physics`) and how its score joins the served one
        (``score="off"`` by default, and for every checkpoint written before it existed).
    photoz_student : int
        Hidden width of the distilled host-only photo-z network that serves the photo-z
        (:mod:`models.photoz_student`); 0: none, the encoder's host path serves it.
    photoz_lc, photoz_lc_members : int
        Hidden width (0: none) and networks of the light curve's redshift likelihood (:mod:`models.photoz_lc`).
    photoz_lc_join : bool
        Whether that likelihood also joins the served ``photoz`` of alerts whose top class it serves
        (``train-photoz-lc --join``); either way it gives ``photozIfClass``, the photo-z if the alert
        is of those classes. Checkpoints written before the flag joined.
    features : dict
        The featurizer settings the model was trained on
        (:meth:`broker.features.FeatureConfig.settings`): serving featurizes with them, and
        commands that featurize with the current defaults refuse a checkpoint with others
        (:func:`models.checkpoint.load_checkpoint`). Checkpoints written before the record
        load with :data:`broker.features.core.LEGACY_SETTINGS`.
    """

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    n_classes: int = 12
    n_components: int = 5
    forest: ForestConfig = field(default_factory=ForestConfig)
    neighbours: NeighbourConfig = field(default_factory=NeighbourConfig)
    real_bogus: bool = False
    physics: PhysicsConfig = field(default_factory=PhysicsConfig)
    photoz_student: int = 0
    photoz_lc: int = 0
    photoz_lc_members: int = 4
    photoz_lc_join: bool = False
    features: dict[str, bool | int | float] = field(default_factory=lambda: FeatureConfig().settings())

    def __post_init__(self) -> None:
        FeatureConfig.from_settings(self.features)  # exactly the featurizer's settings, or a ValueError

    def to_dict(self) -> dict:
        """Plain nested dict (checkpoint-safe)."""
        d = asdict(self)
        d["encoder"] = self.encoder.to_dict()
        d["physics"] = self.physics.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Inverse of :meth:`to_dict`."""
        # checkpoints written before the forest (the bank) existed carry no "forest" ("neighbours")
        # entry; without a bank the forest is the served score, as it was
        return cls(encoder=EncoderConfig(**d["encoder"]), n_classes=int(d["n_classes"]),
                   n_components=int(d["n_components"]), forest=_forest_config(d.get("forest", {})),
                   neighbours=NeighbourConfig(**d.get("neighbours", {"n_bank": 0})),
                   real_bogus=bool(d.get("real_bogus", False)),
                   physics=PhysicsConfig.from_dict(d.get("physics", {})),
                   photoz_student=int(d.get("photoz_student", 0)),
                   photoz_lc=int(d.get("photoz_lc", 0)), photoz_lc_members=int(d.get("photoz_lc_members", 4)),
                   photoz_lc_join=bool(d.get("photoz_lc_join", True)),
                   features=dict(d.get("features", LEGACY_SETTINGS)))


def _forest_config(d: dict) -> ForestConfig:
    """ForestConfig from its checkpoint dict (``edges`` is stored as a list)."""
    return ForestConfig(**{**d, **({"edges": tuple(d["edges"])} if "edges" in d else {})})


class MultimodalModel(nn.Module):
    """Encoder + heads; see the module docstring."""

    # registered buffers (typed here for mypy: nn.Module.__getattr__ returns Tensor | Module)
    temperature: Tensor
    z_sigma_scale: Tensor

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.encoder.d_model
        self.encoder = PerceiverEncoder(cfg.encoder)
        self.host_path = HostPath(d)
        self.cls_head = nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Linear(d, cfg.n_classes))
        self.z_head = MixtureHead(2 * d, 2 * d, cfg.n_components)
        self.register_buffer("temperature", torch.ones(()))
        self.register_buffer("z_sigma_scale", torch.ones(()))
        self.recon = ReconHead(d, cfg.encoder.n_fourier)  # training aid, see ReconHead
        d_in = len(DESCRIPTORS) + 2 * d + cfg.n_classes
        self.anomaly = AnomalyForest(d_in, cfg.forest)
        self.neighbours = NeighbourBank(d_in, (len(DESCRIPTORS), 2 * d, cfg.n_classes),
                                        cfg.forest.edges, cfg.neighbours)
        self.contrast = ContrastiveHead(d)  # training aid, see models.ssl
        self.embedding = EmbeddingProjection(2 * d + cfg.n_classes)  # published, see models.embedding
        self.forecast = ForecastHead(d, cfg.encoder.n_fourier)  # published, see models.forecast
        self.real_bogus = RealBogusHead(2 * d) if cfg.real_bogus else None
        self.physics = PhysicsDensity(cfg.physics)
        # served host-only photo-z, distilled from photoz_mixture_from_host (models.photoz_student)
        self.photoz_student = (HostPhotozStudent(cfg.n_components, cfg.photoz_student) if cfg.photoz_student
                               else None)  # fmt: skip
        # the light curve's redshift likelihood, times the host's for the classes it serves (models.photoz_lc)
        self.photoz_lc = (LcRedshift(len(FEATURE_NAMES), cfg.photoz_lc, cfg.photoz_lc_members, n_classes=cfg.n_classes)
                          if cfg.photoz_lc else None)  # fmt: skip
        # the alert-selection prior of the served photo-z (identity until fitted: models.photoz_prior)
        self.photoz_prior = SelectionPrior()
        # class probabilities given the luminosity at the served photo-z (identity until fitted: models.luminosity)
        self.luminosity = LuminosityPrior(cfg.n_classes)

    def forward(self, lc: Tensor, lc_mask: Tensor, host: Tensor, host_mask: Tensor,
                feat: Tensor, feat_mask: Tensor, img: Tensor | None = None,
                img_mask: Tensor | None = None) -> dict[str, Tensor]:
        """Raw outputs for a batch (token shapes as :class:`~models.encoder.PerceiverEncoder`).

        Returns
        -------
        dict
            ``emb`` (n, d), ``trunk`` (n, 2d), ``logits`` (n, K), ``logw``/``mu``/``sigma``
            (n, M), uncalibrated; ``rb_logit`` (n,) with a real/bogus head.
        """
        emb = self.encoder(lc, lc_mask, host, host_mask, feat, feat_mask, img, img_mask)
        trunk = torch.cat([emb, self.host_path(host, host_mask)], -1)
        logw, mu, sigma = self.z_head(trunk)
        out = {"emb": emb, "trunk": trunk, "logits": self.cls_head(trunk), "logw": logw, "mu": mu,
               "sigma": sigma}
        if self.real_bogus is not None:
            out["rb_logit"] = self.real_bogus(trunk)
        return out

    @torch.no_grad()
    def infer(self, host_z: Tensor | None = None, with_photoz: bool = True, **tokens: Tensor) -> dict[str, Tensor]:
        """Calibrated outputs: ``probs`` (n, K), ``photoz`` (n, 8), ``anomaly`` (n,), ``emb`` (n, d),
        ``embedding`` (n, EMBEDDING_DIM; NaN if the projection is unfitted), ``forecast`` (n, 6, H, 5)
        flux-token quantiles (NaN without data in a band or with an uncalibrated head), and
        ``real`` (n,) calibrated P(real) with a real/bogus head.

        ``host_z`` (n,) is the served host-only photo-z median (NaN: none); with it and a physics
        score switched on (``cfg.physics.score``) the anomaly score includes the physics score, and
        ``anomaly_base`` / ``anomaly_physics`` (n,) give the two parts; with it and a fitted
        luminosity prior (:mod:`models.luminosity`) ``probs`` include the prior. ``with_photoz=False`` leaves
        out ``photoz``: the stream serves the host-only photo-z (:meth:`photoz_from_host`), and the
        mixture summary of this pass cost ~20-50 µs per alert.
        """
        out = self.forward(**tokens)
        probs, inputs = self._probs(out, tokens, host_z)
        ctx = anomaly_context(out)
        anomaly = self.anomaly_score(ctx, tokens["lc"], tokens["lc_mask"])
        parts = {}
        if inputs is not None and self.cfg.physics.score != "off":
            phys = self.physics.score(*inputs)
            parts = {"anomaly_base": anomaly, "anomaly_physics": phys}
            anomaly = combine_physics(anomaly, phys, self.cfg.physics.score)
        res = {"probs": probs, "anomaly": anomaly, **parts, "emb": out["emb"].float(),
               "embedding": self.embedding(ctx),
               "forecast": self.forecast.grid(out["emb"], tokens["lc"], tokens["lc_mask"])}
        if with_photoz:
            res["photoz"] = mixture_summary(out["logw"], out["mu"], out["sigma"] * self.z_sigma_scale)
        if self.real_bogus is not None:
            res["real"] = self.real_bogus.probability(out["rb_logit"])
        return res

    @torch.no_grad()
    def class_probs(self, host_z: Tensor | None = None, **tokens: Tensor) -> Tensor:
        """Calibrated class probabilities (n, K) alone: :meth:`infer`'s ``probs``, no other head.

        Why: a member of a served ensemble (:mod:`models.ensemble`) contributes only its classes;
        :meth:`infer` would also run its anomaly forest, embedding and forecast, to be thrown away.
        """
        return self._probs(self.forward(**tokens), tokens, host_z)[0]

    def _probs(self, out: dict[str, Tensor], tokens: dict[str, Tensor], host_z: Tensor | None
               ) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """Tempered probabilities (n, K), with the luminosity prior where the model reads ``host_z``.

        Returns the probabilities and the prior's inputs ``(x, n_det)`` (None without ``host_z``), which
        the physics score reads too: one pass over the inputs for both.
        """
        probs = torch.softmax(out["logits"].float() / self.temperature, -1)
        if host_z is None or not self.reads_host_z:
            return probs, None
        x, n_det = self.physics.inputs_fp32(tokens["lc"], tokens["lc_mask"], tokens["feat"], tokens["feat_mask"],
                                            host_z)  # fmt: skip
        return self.luminosity(probs, x[:, :2], n_det), (x, n_det)  # (abs_mag, log_z): physics.INPUTS starts with them

    def anomaly_score(self, ctx: Tensor, lc: Tensor, lc_mask: Tensor) -> Tensor:
        """The served anomaly score (n,): forest, neighbour, or both (``cfg.neighbours.score``).

        ``max`` and ``mean`` combine the two calibrated ``-log10`` tail scores; where the
        neighbour score is NaN (no bank for the stratum) the forest score stands.
        """
        forest = self.anomaly(ctx, lc, lc_mask)
        mode = self.cfg.neighbours.score
        if mode == "forest":
            return forest
        knn = self.neighbours(ctx, lc, lc_mask)
        if mode == "knn":
            return knn
        both = torch.maximum(forest, knn) if mode == "max" else 0.5 * (forest + knn)
        return torch.where(knn.isnan(), forest, both)

    @property
    def reads_host_z(self) -> bool:
        """Whether :meth:`infer` uses the served photo-z median (``host_z``): a physics score or a luminosity prior."""
        return self.cfg.physics.score != "off" or self.luminosity.is_fitted

    @torch.no_grad()
    def photoz_from_host(self, host: Tensor, host_mask: Tensor, selection: bool = True,
                         with_mixture: bool = False) -> Tensor:
        """Calibrated photo-z summary (n, 8) from the host tokens alone.

        Why: the photo-z head is trained on DC2 galaxies with the light-curve and feature tokens
        masked; served with them present, its inputs are out of distribution (simulated hosted
        transients: sigma_NMAD 0.133, 38 % outliers; host-only 0.038, 6.3 %). Only the magnitude
        tokens are kept: DC2 galaxies have no separation or light-radius tokens, and adding them
        raised the served outliers from 3 % to 22-26 % (docs/models.md).

        A distilled :class:`~models.photoz_student.HostPhotozStudent` (``cfg.photoz_student``) serves
        it if present; :meth:`photoz_mixture_from_host` is the encoder's path it learned from. With
        ``selection`` a fitted :class:`~models.photoz_prior.SelectionPrior` multiplies the mixture by
        the redshift selection of alerted hosts (identity when unfitted); without it the summary is
        the field galaxy's posterior (catalogue galaxies). ``with_mixture`` (with ``selection``)
        appends that product's ``logw``, ``mu``, ``sigma`` (n, 3M) for :func:`models.photoz_lc.joint_summary`.
        """
        mix = (self.photoz_student(host, host_mask) if self.photoz_student is not None
               else self.photoz_mixture_from_host(host, host_mask))
        if not selection:
            return mixture_summary(*mix)
        prior = self.photoz_prior.multiply(*mix)
        out = mixture_summary(*prior)
        return torch.cat([out, *(t.float() for t in prior)], 1) if with_mixture else out

    def photoz_mixture_from_host(self, host: Tensor, host_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The encoder's calibrated host-only photo-z mixture ``(logw, mu, sigma)``, each (n, M)."""
        n = host.shape[0]
        lc, feat = host.new_zeros(n, 0, len(LC_FIELDS)), host.new_zeros(n, 0, len(FEAT_FIELDS))
        empty = torch.zeros(n, 0, dtype=torch.bool, device=host.device)
        mags = host_mask & (host[..., 0] == HOST_KIND_MAG)
        out = self.forward(lc, empty, host, mags, feat, empty)
        return out["logw"], out["mu"], out["sigma"] * self.z_sigma_scale


def combine_physics(base: Tensor, physics: Tensor, mode: str) -> Tensor:
    """The served score from the base score and the physics score (``PhysicsConfig.score``).

    ``physics`` serves the physics score, ``max`` the larger and ``mean`` the mean of the two
    calibrated ``-log10`` tail scores; where the physics score is NaN (no photo-z, too few
    detections, no fitted cell) the base score stands, and ``off`` is the base score.
    """
    if mode == "off":
        return base
    both = {"physics": physics, "max": torch.maximum(base, physics), "mean": 0.5 * (base + physics)}[mode]
    return torch.where(physics.isnan(), base, both)


def anomaly_context(out: dict) -> Tensor:
    """What the anomaly forest sees besides descriptors: ``[trunk, logits]`` (n, 2d + K)."""
    return torch.cat([torch.as_tensor(out["trunk"]).float(), torch.as_tensor(out["logits"]).float()], 1)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
