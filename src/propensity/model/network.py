"""The propensity model (shared/DESIGN.md, "Model"): one LSTM layer over per-event vectors.

Per event: embeddings of event type and hashed article, brand and category; a one-hot of the
event type; for each target on items, a flag for events on its items; log time since the
previous event; log age (time from the event to the prediction
time); log price; time of day (sin/cos) and weekday (one-hot). The LSTM's hidden state at each
history's last real event, with the profile context (time since the last event, calendar
features of the prediction time, and the histories' counters over the whole retention window:
tenure, order value, events, active days and recency per type; see `batches`) and the log of
decayed event counts per type (sum over events of one-hot(type) * exp(-age / tau), for each tau
in `model.count_decay_days`), then the same counts of the events on each item target's items,
the sessions within each span and each item target's share of the articles looked at, feed a
small head with one logit per target.

Why the counts: recency-weighted frequencies are what a logistic regression on hand-made features
lives on, and an LSTM learns sums over hundreds of steps slowly from a few thousand positives;
given them directly, the sequence model starts where the regression ends and the LSTM state adds
the order and content of events. The stored counters add what the decayed counts cannot see:
the events `max_events` cut from the list (a heavy visitor's 200 events may cover only days).
The decayed counts are computed from the one-hot slice of the per-event vectors, so
integrated gradients attribute them to the events that make them up (at the zero baseline
every count is zero); the stored counters are attributed as profile-level features.
A target's logit is a linear "wide" part over the same profile inputs plus the head's output
where that target's `deep_on` is set: training chooses it per target on the validation rows, so
where the sequence adds nothing that generalises the target keeps the regression alone.
Scores are `torch.sigmoid(logits)`.

The forward pass is split so explanations can work on the per-event input vectors:
`embed(batch) -> x [B, T, F]`, then `forward_from_embedded(x, batch) -> logits`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict

import torch
from torch import nn

from propensity.config import Config
from propensity.model.batches import CONTEXT_FEATURES, Batch, FeatureSpec, item_predicates
from propensity.model.items import ItemPredicate

# Log features (hours, prices) span about 0..10: scaled to about 0..2.5 so LSTM gates and the
# head start out of saturation.
_LOG_SCALE = 0.25
_SINCE_LAST = CONTEXT_FEATURES.index("log_hours_since_last")
# Architecture fields: two models whose `architecture()` match can exchange weights (warm start).
_ARCH_FIELDS = (
    "hidden_size",
    "type_dim",
    "article_buckets",
    "article_dim",
    "brand_buckets",
    "brand_dim",
    "category_buckets",
    "category_dim",
    "count_decay_days",
    "wide",
    "counters",
    "session_counts",
)
_HOURS_PER_DAY = 24.0
COUNT_FLOOR = 0.01  # added to decayed counts before the log: "none" sits at log(0.01) = -4.6
# The recency features (as the baseline's): days since the last event, and these kinds.
RECENCY_OF = ("order", "add_to_cart")
NO_EVENT_DAYS = 365.0  # recency of a kind never seen
# A session starts at a history's first event and at every event this long after the previous
# one (the usual web-analytics timeout).
SESSION_GAP_HOURS = 0.5
# Pseudo-articles of the prior of a target's item share: the share is (ITEM_SHARE_PRIOR_ARTICLES *
# prior + articles on the target's items) / (ITEM_SHARE_PRIOR_ARTICLES + articles). Chosen in a
# regression probe on planted 20k and 80k profiles: 1 did best at 80k and as well as 0.5 at 20k;
# 0.1 lost 0.004 to 0.007 AUROC, 8 lost 0.012 (docs/train.md, "Item shares").
ITEM_SHARE_PRIOR_ARTICLES = 1.0
# Inverse L2 strengths the wide part's regression chooses from, per target, by validation loss.
# The baseline's C = 1 on every input cost the demo's first model (3,782 rows, 88 inputs)
# 0.049 AUROC against C = 0.003, and lost to the baseline; at 20,000 profiles C = 1 is best for
# the any-order target, 0.003 for the category one (docs/train.md, "The wide part").
WIDE_C = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
# A profile input whose spread on the training rows is below this is (nearly) constant there:
# it is centred, not divided by its spread, which would put the first different value at
# thousands of standard deviations (a model trained on one weekday of prediction time scored
# every other weekday near 0, and its warm-started successors inherited that).
STD_FLOOR = 1e-2


def _plain(value):
    """A config value as JSON gives it back (tuples as lists), so architectures compare equal."""
    return list(value) if isinstance(value, tuple) else value


def age_hours(batch: Batch) -> torch.Tensor:
    """Hours from each event to the prediction time [B, T], float64: the sum of the batch's
    gaps after the event plus its time since the last event. In float64 because the windowed
    counts compare it with their spans (`age <= T`): a float32 sum over 200 gaps and 180 days
    is off by ~1e-4 hours, a different ~1e-4 in every runtime (kernels sum in other orders), so
    an event that close to a window's edge was counted in one runtime and not in another
    (docs/score.md, "Runtime"); in float64 the runtimes differ by ~1e-12 hours, far below the
    float32 rounding of the encoded gaps, and every float32 feature made from it is the same.
    Padding gaps are 0, so real steps never depend on padding."""
    gap = torch.expm1(batch.log_gap.double())
    after = gap.sum(dim=1, keepdim=True) - gap.cumsum(dim=1)  # gaps of the later events
    since_last = torch.expm1(batch.context[:, _SINCE_LAST].double()).unsqueeze(1)
    return (after + since_last).clamp(min=0)


def log_age(batch: Batch) -> torch.Tensor:
    """log1p(hours from each event to the prediction time) [B, T] (`age_hours`). Gives the
    LSTM each event's recency directly (summing gaps over a long history is hard for it to
    learn)."""
    return torch.log1p(age_hours(batch)).to(batch.log_gap.dtype)


class PropensityModel(nn.Module):
    """LSTM propensity model; `forward(batch)` gives logits [B, n_targets]."""

    def __init__(self, model_cfg, types: Sequence[str], targets: Sequence[str],
                 items: Sequence[ItemPredicate] = ()):
        """Build from the config's `model` section, the event types (index 0 = "other", as in
        `cfg.events.types`), the target names (one logit each, in this order) and the item
        predicates of the targets on items (`batches.item_predicates`)."""
        super().__init__()
        m = model_cfg
        self.model_cfg = m
        self.spec = FeatureSpec(
            types=tuple(types),
            article_buckets=m.article_buckets,
            brand_buckets=m.brand_buckets,
            category_buckets=m.category_buckets,
            items=tuple(items),
            counters=m.counters,
        )
        self.targets = list(targets)
        self.type_emb = nn.Embedding(len(types), m.type_dim)
        self.article_emb = nn.Embedding(m.article_buckets, m.article_dim, padding_idx=0)
        self.brand_emb = nn.Embedding(m.brand_buckets, m.brand_dim, padding_idx=0)
        self.category_emb = nn.Embedding(m.category_buckets, m.category_dim, padding_idx=0)
        self.count_decay_hours = [d * _HOURS_PER_DAY for d in m.count_decay_days]
        groups = [
            ("event_type", m.type_dim),
            ("type_onehot", len(types)),
            ("article", m.article_dim),
            ("brand", m.brand_dim),
            ("category", m.category_dim),
            ("item_match", len(items)),
            ("log_gap", 1),
            ("log_age", 1),
            ("log_price", 1),
            ("time_of_day", 2),
            ("weekday", 7),
        ]
        self.feature_groups: dict[str, slice] = {}
        start = 0
        for name, width in groups:
            self.feature_groups[name] = slice(start, start + width)
            start += width
        self.input_size = start
        self.lstm = nn.LSTM(self.input_size, m.hidden_size, num_layers=1, batch_first=True)
        context_names = self.spec.context_features
        n_context = len(context_names)
        # Decayed and windowed, per type, of all events then of each item target's; then per
        # such group its events and recencies; then the sessions within each span; then each
        # item target's share of the articles.
        groups = 1 + len(items)
        self.n_sessions = len(self.count_decay_hours) if m.session_counts else 0
        self.n_shares = len(items) if m.item_share and self.count_decay_hours else 0
        self.n_counts = (
            (2 * len(self.count_decay_hours) * len(types) + 2 + len(RECENCY_OF)) * groups
            + self.n_sessions + self.n_shares if self.count_decay_hours else 0
        )
        if self.n_shares:
            # Each item target's share of the fresh articles on the training rows: the prior
            # of its smoothed share (`fit_item_share_prior`), saved with the weights.
            self.register_buffer("item_share_prior", torch.full((self.n_shares,), 0.5))
        # Standardises the profile-level inputs (as the baseline regression's scaler does), so
        # the wide part's weights all learn at one pace. Fixed statistics of the training rows
        # (`fit_profile_scaler`), saved with the weights: batch statistics would not do, as
        # length-bucketed batches hold very different profiles.
        n_profile = n_context + self.n_counts
        self.register_buffer("profile_mean", torch.zeros(n_profile))
        self.register_buffer("profile_std", torch.ones(n_profile))
        # Every log feature of the context on the scale of the per-event ones (flags stay 0/1).
        scale = torch.tensor([_LOG_SCALE if n.startswith("log_") else 1.0 for n in context_names])
        self.register_buffer("context_scale", scale, persistent=False)
        self.head = nn.Sequential(
            nn.Dropout(m.dropout),
            nn.Linear(m.hidden_size + n_context + self.n_counts, m.hidden_size),
            nn.ReLU(),
            nn.Linear(m.hidden_size, len(self.targets)),
        )
        # The wide part (Cheng et al. 2016, "Wide & Deep"): a linear function of the context
        # and the decayed counts added to the deep head's logit. The deep head's last layer
        # starts at zero, so training starts from a linear model of the counts (what the
        # baseline regression is) and the LSTM grows what the counts miss.
        self.wide = nn.Linear(n_context + self.n_counts, len(self.targets)) if m.wide else None
        if self.wide is not None:
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)
            self.register_buffer("wide_mask", self._wide_mask(context_names), persistent=False)
            # Whether each target's logit adds the deep head's output (1) or is the wide part's
            # alone (0): chosen per target by validation loss whenever weights are validated
            # (`training.lightning.gated_loss`), so a deep part that helps one target is kept
            # without another target paying for it. Training always fits wide + deep.
            self.register_buffer("deep_on", torch.ones(len(self.targets)))

    def _wide_mask(self, context_names: list[str]) -> torch.Tensor:
        """Which profile inputs each target's wide part reads [n_targets, P]: the context but the
        counters; the windowed counts and the recencies of all events; for a target on items
        its share of the articles (`_item_shares`; without them, the counts and recencies of
        the events on its own items), else the decayed counts and sessions of all events. A
        regression on every input lost to the baseline's compact features (docs/train.md,
        "Quality": other targets' item counts cost the any-order target 0.012 AUROC, the
        counters 0.003; decayed counts gain it 0.005 and cost an item target 0.002; beside the
        share, the item counts cost an item target 0.006); the deep head reads everything."""
        K, W = len(self.spec.types), len(self.count_decay_hours)
        G = 1 + len(self.spec.items)
        own = {p.target: i for i, p in enumerate(self.spec.items)}
        mask = torch.zeros(len(self.targets), len(context_names) + self.n_counts)
        plain = [i for i, n in enumerate(context_names) if n in CONTEXT_FEATURES]
        mask[:, plain] = 1
        if not self.n_counts:
            return mask
        start = len(context_names)
        end = len(context_names) + self.n_counts - self.n_sessions - self.n_shares
        counts = mask[:, start : start + 2 * W * K * G].view(len(self.targets), 2 * W, G, K)
        extras = mask[:, start + 2 * W * K * G : end].view(len(self.targets), G, -1)
        sessions = mask[:, end : end + self.n_sessions]
        shares = mask[:, end + self.n_sessions :]
        counts[:, W:, 0] = 1  # every target: the windowed counts of all events, their recencies
        extras[:, 0] = 1
        for j, name in enumerate(self.targets):
            if name in own and self.n_shares:  # a target on items: its share of the articles
                shares[j, own[name]] = 1
            elif name in own:  # without shares: its own items' counts (not other targets')
                counts[j, W:, 1 + own[name]] = 1
                extras[j, 1 + own[name]] = 1
            else:  # a target on event types: the decayed counts and sessions as well
                counts[j, :W, 0] = 1
                sessions[j] = 1
        return mask

    @classmethod
    def from_config(cls, cfg: Config) -> PropensityModel:
        """A fresh model for a whole config (its event types and targets)."""
        return cls(cfg.model, cfg.events.types, cfg.target_names, item_predicates(cfg))

    def architecture(self) -> dict:
        """What must match for weights to be exchangeable (warm start)."""
        return {
            **{f: _plain(getattr(self.model_cfg, f)) for f in _ARCH_FIELDS},
            # What the model does, not the config's flag: without targets on items there is no
            # share, so a champion from before `item_share` existed warm-starts such a config.
            "item_share": bool(self.n_shares),
            "types": list(self.spec.types),
            "targets": list(self.targets),
            "feature_spec_version": self.spec.version,
            # As model.json gives them back (lists): tuples here refused every warm start of a
            # config with a target on items.
            "items": [{k: _plain(v) for k, v in asdict(p).items()} for p in self.spec.items],
            "input_size": self.input_size,
        }

    def embed(self, batch: Batch) -> torch.Tensor:
        """Per-event input vectors [B, T, F]; `feature_groups` names the slices of F."""
        angle = batch.hour * (2 * math.pi / 24)
        parts = [
            self.type_emb(batch.event_type),
            nn.functional.one_hot(batch.event_type, len(self.spec.types)).to(batch.log_gap.dtype),
            self.article_emb(batch.article),
            self.brand_emb(batch.brand),
            self.category_emb(batch.category),
            batch.item_match.to(batch.log_gap.dtype),
            (batch.log_gap * _LOG_SCALE).unsqueeze(-1),
            (log_age(batch) * _LOG_SCALE).unsqueeze(-1),
            (batch.log_price * _LOG_SCALE).unsqueeze(-1),
            torch.sin(angle).unsqueeze(-1),
            torch.cos(angle).unsqueeze(-1),
            nn.functional.one_hot(batch.weekday, 7).to(batch.log_gap.dtype),
        ]
        return torch.cat(parts, dim=-1)

    def hidden_states(self, x: torch.Tensor) -> torch.Tensor:
        """LSTM hidden states after every step [B, T, H] (padding steps come after the real
        ones, so the states at real steps never see padding)."""
        out, _ = self.lstm(x)
        return out

    def count_channels(self, x: torch.Tensor) -> torch.Tensor:
        """Per step, what the counts count [B, T, K(1+J)]: the one-hot of the event type, then
        for each of the J item targets that one-hot where the event is on the target's items."""
        onehot = x[..., self.feature_groups["type_onehot"]]  # [B, T, K]
        flags = x[..., self.feature_groups["item_match"]]  # [B, T, J]
        if not flags.shape[-1]:
            return onehot
        on_items = (flags.unsqueeze(-1) * onehot.unsqueeze(-2)).flatten(-2)
        return torch.cat([onehot, on_items], dim=-1)

    def decayed_counts(self, x: torch.Tensor, batch: Batch, running: bool = False) -> torch.Tensor:
        """Counts per event type and time span T [B, n_counts] at the prediction time: first
        log(COUNT_FLOOR + sum of exp(-age / T)) for every T, then log1p(events of age <= T)
        (`running`: [B, T, n_counts], counting only the events up to each step), per count
        channel; then per channel group its events and recencies (`_events_and_recency`); then
        the sessions started within each span (`_sessions`, with `model.session_counts`). From
        the one-hot slice of `x`, padding steps masked out."""
        B, T = batch.event_type.shape
        if not self.n_counts:
            return x.new_zeros((B, T, 0) if running else (B, 0))
        steps = torch.arange(T, device=x.device)
        real = (steps[None, :] < batch.lengths.to(x.device)[:, None]).to(x.dtype)  # [B, T]
        age = age_hours(batch).to(x.device)  # float64 [B, T]: see `age_hours`
        tau = torch.tensor(self.count_decay_hours, dtype=age.dtype, device=x.device)
        span = age.unsqueeze(-1) / tau  # [B, T, W]
        weights = torch.cat([torch.exp(-span), (span <= 1).to(span.dtype)], dim=-1)
        weights = weights.to(x.dtype) * real.unsqueeze(-1)  # [B, T, 2W]
        onehot = self.count_channels(x)  # [B, T, C]
        per_step = weights.unsqueeze(-1) * onehot.unsqueeze(-2)  # [B, T, 2W, C]
        counts = (per_step.cumsum(dim=1) if running else per_step.sum(dim=1)).clamp(min=0)
        w = len(self.count_decay_hours)
        # log(floor + decayed): for many recent events the log count (frequency), for one old
        # event -age / T (recency); log1p(windowed): the counts a regression on RFM features uses.
        decayed = torch.log(counts[..., :w, :] + COUNT_FLOOR)
        windowed = torch.log1p(counts[..., w:, :])
        days = (age / _HOURS_PER_DAY).float()
        extras = self._events_and_recency(onehot, batch, days, real, running)
        parts = [torch.cat([decayed, windowed], dim=-2).flatten(-2), extras]
        starts = (self._session_starts(batch, x.device) if self.n_sessions or self.n_shares
                  else None)
        if self.n_sessions:
            parts.append(self._sessions(onehot, starts, weights[..., w:], running))
        if self.n_shares:
            parts.append(self._item_shares(onehot, batch, starts, running))
        return torch.cat(parts, dim=-1) * _LOG_SCALE

    def _per_group(self, channels: torch.Tensor) -> torch.Tensor:
        """`count_channels` summed over the event types [B, T, 1 + J]: 1 on a real event, then
        per item target 1 on an event on its items."""
        *lead, C = channels.shape
        K = len(self.spec.types)
        return channels.view(*lead, C // K, K).sum(dim=-1)

    def _session_starts(self, batch: Batch, device: torch.device) -> torch.Tensor:
        """Whether each step starts a session [B, T] (bool): the first event, and every event
        more than SESSION_GAP_HOURS after the previous one."""
        steps = torch.arange(batch.log_gap.shape[1], device=device)
        gap = torch.expm1(batch.log_gap.to(device).float())
        return (steps[None, :] == 0) | (gap > SESSION_GAP_HOURS)

    def _fresh_articles(self, batch: Batch, starts: torch.Tensor) -> torch.Tensor:
        """Whether each step shows a fresh article [B, T] (bool): it carries an article, and that
        differs from the article of the session's previous event with one (searches carry
        none), or it is the session's first. Looking at an article again is one choice seen
        twice; a new article is a new draw from what the profile likes (docs/generate.md).
        The previous article-carrying step is found by scattering each such step to its rank
        among them, as ONNX at opset 17 has no running maximum to carry it forward."""
        article = batch.article.to(starts.device)
        device = starts.device
        B, T = article.shape
        has = article != 0  # 0: no article, or padding
        session = starts.long().cumsum(dim=1)
        rank = has.long().cumsum(dim=1) - 1  # among the article-carrying steps, from 0
        steps = torch.arange(T, device=device).expand(B, T)
        at = torch.zeros(B, T + 1, dtype=torch.long, device=device)  # column T: the others
        at = at.scatter(1, torch.where(has, rank, torch.full_like(rank, T)), steps)
        before = at.gather(1, (rank - 1).clamp(min=0))  # the previous article-carrying step
        first = rank == 0
        new = (article.gather(1, before) != article) | (session.gather(1, before) != session)
        return has & (first | new)

    def _fresh_per_group(self, channels: torch.Tensor, batch: Batch,
                         starts: torch.Tensor) -> torch.Tensor:
        """Fresh articles per step and group [B, T, 1 + J]: all, then on each item target's
        items (`_fresh_articles` weighted by `_per_group`)."""
        fresh = self._fresh_articles(batch, starts).to(channels.dtype)
        return fresh.unsqueeze(-1) * self._per_group(channels)

    def _item_shares(self, channels: torch.Tensor, batch: Batch, starts: torch.Tensor,
                     running: bool) -> torch.Tensor:
        """Per item target, log of its smoothed share of the fresh articles a history shows
        (`_fresh_articles`): (c * prior + on its items) / (c + all), c =
        ITEM_SHARE_PRIOR_ARTICLES, the prior its share on the training rows [B, J] (`running`:
        [B, T, J]). Why: an item target orders as often as its profile orders at all, times the
        share of what the profile likes that its items are, and the share is what a history
        estimates from the distinct articles it looked at, where the counts of events
        on the items grow with every second look. A regression on the baseline's features of
        all events and this share gained +0.010 AUROC over the baseline on planted 20k profiles
        (docs/train.md, "Item shares"). Weighted by the one-hot and item flags of `channels`,
        so explanations credit each article to the event that showed it."""
        n = self._fresh_per_group(channels, batch, starts)
        n = (n.cumsum(dim=1) if running else n.sum(dim=1)).clamp(min=0)
        prior = self.item_share_prior.to(n.dtype)
        c = ITEM_SHARE_PRIOR_ARTICLES
        return torch.log(c * prior + n[..., 1:]) - torch.log(c + n[..., :1])

    @torch.no_grad()
    def fit_item_share_prior(self, batches: Iterable[Batch]) -> None:
        """Each item target's prior share: its share of all fresh articles in `batches`."""
        total = torch.zeros(1 + self.n_shares, dtype=torch.float64)
        for batch in batches:
            channels = self.count_channels(self.embed(batch))
            starts = self._session_starts(batch, channels.device)
            total += self._fresh_per_group(channels, batch, starts).sum(dim=(0, 1)).double().cpu()
        share = total[1:] / total[0].clamp(min=1)
        self.item_share_prior.copy_(share.clamp(1e-3, 1 - 1e-3).float())

    def _sessions(self, channels: torch.Tensor, starts: torch.Tensor, in_span: torch.Tensor,
                  running: bool) -> torch.Tensor:
        """log1p(sessions started within each span T) [B, W] (`running`: [B, T, W]). A
        regression on the event counts cannot tell ten events in one visit from ten visits, and
        how often a profile comes back is what its intent drives (docs/generate.md: the session
        rate rises with intent, events per session less); it gained a regression on the wide
        part's inputs +0.0014 AUROC for any order at 80k and 200k profiles (docs/train.md). The
        starts are weighted by the events' one-hot sum (1 on a real event), so explanations
        credit each session to the event that began it."""
        K = len(self.spec.types)
        starts = starts.to(channels.dtype) * channels[..., :K].sum(dim=-1)  # [B, T]; 0: padding
        n = starts.unsqueeze(-1) * in_span  # [B, T, W]
        n = n.cumsum(dim=1) if running else n.sum(dim=1)
        return torch.log1p(n.clamp(min=0))

    def _events_and_recency(self, channels: torch.Tensor, batch: Batch, age_days: torch.Tensor,
                            real: torch.Tensor, running: bool) -> torch.Tensor:
        """Per channel group (all events, then each item target's): log1p(events), then
        log1p(days since the last event, order and cart add), capped at NO_EVENT_DAYS: the
        baseline regression's recency features, which the decayed counts only approximate.
        The events are counted from `channels` (the one-hot of `x`: explanations credit them to
        the events); the recencies come from the batch's own codes, so, like the context, they
        stay at their real values along an explanation's integration path (a minimum has no
        useful gradient)."""
        K = len(self.spec.types)
        n = self._per_group(channels) * real[..., None]  # [B, T, G]
        n = n.cumsum(dim=1) if running else n.sum(dim=1)
        codes = nn.functional.one_hot(batch.event_type.to(age_days.device), K).to(age_days.dtype)
        flags = batch.item_match.to(age_days.device).to(age_days.dtype)
        every = torch.ones(*flags.shape[:-1], 1, dtype=flags.dtype, device=flags.device)
        groups = torch.cat([every, flags], dim=-1)  # [B, T, G]: all events, each target's items
        kinds = [torch.ones_like(codes[..., 0])]  # any event, then the kinds the baseline times
        for kind in RECENCY_OF:
            kinds.append(codes[..., self.spec.types.index(kind)] if kind in self.spec.types
                         else torch.zeros_like(codes[..., 0]))
        hit = groups.unsqueeze(-1) * torch.stack(kinds, dim=-1).unsqueeze(-2)  # [B, T, G, 1+R]
        hit = (hit * real[..., None, None]) > 0
        days = torch.where(hit, age_days[..., None, None], NO_EVENT_DAYS)  # [B, T, G, 1 + R]
        last = torch.cummin(days, dim=1).values if running else days.min(dim=1).values
        out = torch.cat([torch.log1p(n).unsqueeze(-1), torch.log1p(last.clamp(max=NO_EVENT_DAYS))],
                        dim=-1)
        return out.flatten(-2)  # [B, G * (2 + len(RECENCY_OF))]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Weights saved before the per-target gate have no `deep_on`: their deep part was on
        # for every target.
        key = f"{prefix}deep_on"
        if self.wide is not None and key not in state_dict:
            state_dict[key] = torch.ones_like(self.deep_on)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _parts(
        self, hidden: torch.Tensor, context: torch.Tensor, counts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(wide part's logits, deep head's output) [B, n_targets] each, before `deep_on`;
        the wide part's are zero in a model without one."""
        context = context.to(hidden.dtype) * self.context_scale.to(hidden.dtype)
        profile = torch.cat([context, counts.to(hidden.dtype)], dim=-1)
        profile = (profile - self.profile_mean.to(profile.dtype)) / self.profile_std.to(
            profile.dtype
        )
        deep = self.head(torch.cat([hidden, profile], dim=-1))
        if self.wide is None:
            return torch.zeros_like(deep), deep
        weight = self.wide.weight * self.wide_mask.to(self.wide.weight.dtype)
        wide = nn.functional.linear(profile, weight.to(profile.dtype),
                                    self.wide.bias.to(profile.dtype))
        return wide, deep

    def _head(
        self, hidden: torch.Tensor, context: torch.Tensor, counts: torch.Tensor
    ) -> torch.Tensor:
        wide, deep = self._parts(hidden, context, counts)
        if self.wide is None:
            return deep
        return wide + deep * self.deep_on.to(deep.dtype)

    def wide_and_deep(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(wide part's logits, deep head's output) [B, n_targets] each, before `deep_on`:
        training fits their sum; validation chooses `deep_on` from both."""
        x = self.embed(batch)
        final, counts = self.sequence_part(x, batch)
        return self._parts(final, batch.context, counts)

    def profile_inputs(self, batch: Batch) -> torch.Tensor:
        """The unstandardised profile-level inputs [B, P]: scaled context, then counts."""
        context = batch.context.float() * self.context_scale
        return torch.cat([context, self.decayed_counts(self.embed(batch), batch).float()], dim=-1)

    @torch.no_grad()
    def init_profile_part(self, inputs: torch.Tensor, labels: torch.Tensor, cold: bool = True,
                          fit_wide: bool = True, val_inputs: torch.Tensor | None = None,
                          val_labels: torch.Tensor | None = None) -> dict[str, float]:
        """From training rows' profile inputs [N, P] and labels [N, n_targets]: their
        standardisation, and (`fit_wide`) the wide part set to a logistic regression on them
        (scikit-learn, as the baseline), so training starts where a regression on the counts
        ends. A warm start (`cold` False) keeps the champion's standardisation, which its deep
        part was trained on, but for the inputs that were constant on the champion's rows: the
        champion never learned from those, so they take this run's scaling. With validation
        rows, each target's L2 strength is the one of WIDE_C that gives them the lowest loss
        (`_fit_wide_target`). Returns the inverse strength C chosen per target."""
        mean, std = inputs.mean(dim=0), inputs.std(dim=0)
        std = torch.where(std < STD_FLOOR, torch.ones_like(std), std)  # constant: centred only
        fresh = (torch.ones_like(std, dtype=torch.bool) if cold
                 else self.profile_std < STD_FLOOR)  # models before the floor clamped at 1e-3
        self.profile_mean[fresh] = mean[fresh]
        self.profile_std[fresh] = std[fresh]
        if self.wide is None or not fit_wide:
            return {}
        z = ((inputs - self.profile_mean) / self.profile_std).double().numpy()
        zv = (None if val_inputs is None
              else ((val_inputs - self.profile_mean) / self.profile_std).double().numpy())
        self.wide.weight.zero_()
        chosen = {}
        for j, name in enumerate(self.targets):
            y = labels[:, j].numpy()
            if y.min() == y.max():
                continue
            read = self.wide_mask[j].bool().numpy()
            yv = None if val_labels is None else val_labels[:, j].numpy()
            fit, chosen[name] = _fit_wide_target(
                z[:, read], y, None if zv is None else zv[:, read], yv
            )
            self.wide.weight[j, torch.from_numpy(read)] = torch.from_numpy(fit.coef_[0]).float()
            self.wide.bias[j] = float(fit.intercept_[0])
        return chosen

    def sequence_part(self, x: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """What the head reads of the events: the final LSTM states [B, H] and the decayed
        counts [B, n_counts] (the context, counters included, is applied by `logits_from`)."""
        states = self.hidden_states(x)
        last = (batch.lengths.to(states.device) - 1).clamp(min=0)
        final = states[torch.arange(states.shape[0], device=states.device), last]
        return final, self.decayed_counts(x, batch)

    def logits_from(
        self, final: torch.Tensor, context: torch.Tensor, counts: torch.Tensor
    ) -> torch.Tensor:
        """Logits [B, n_targets] from `sequence_part`'s output and a context [B, C]."""
        return self._head(final, context, counts)

    def forward_from_embedded(self, x: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Logits [B, n_targets] from per-event vectors `x` (output of `embed`)."""
        final, counts = self.sequence_part(x, batch)
        return self.logits_from(final, batch.context, counts)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits [B, n_targets]; scores are sigmoid(logits)."""
        return self.forward_from_embedded(self.embed(batch), batch)

    def running_logits(self, batch: Batch) -> torch.Tensor:
        """Logits after each event [B, T, n_targets]: the head applied to every hidden state,
        with the profile's context at the prediction time. Step `lengths[b]-1` equals forward();
        steps at or beyond `lengths[b]` are padding and meaningless."""
        x = self.embed(batch)
        states = self.hidden_states(x)
        context = batch.context.unsqueeze(1).expand(-1, states.shape[1], -1)
        return self._head(states, context, self.decayed_counts(x, batch, running=True))


def _fit_wide_target(z, y, zv, yv):
    """(regression, C): with validation rows of both classes, the fit of WIDE_C with the lowest
    validation log loss (strongest first, each fit starting from the previous one's weights),
    else C = 1. Chosen on the validation rows, like the deep part and the kept epoch, so every
    choice of the model goes by one loss on one set of rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    if zv is None or yv.min() == yv.max():
        return LogisticRegression(max_iter=2000, C=1.0).fit(z, y), 1.0
    fit = LogisticRegression(max_iter=2000, warm_start=True)
    best = None
    for c in WIDE_C:
        fit.set_params(C=c).fit(z, y)
        loss = log_loss(yv, fit.predict_proba(zv)[:, 1], labels=[0, 1])
        if best is None or loss < best[0]:
            best = (loss, c, fit.coef_.copy(), fit.intercept_.copy())
    fit.coef_, fit.intercept_ = best[2], best[3]
    return fit, best[1]
