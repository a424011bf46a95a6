"""Fixture models for patterns of torchvision's own models that shrink once failed on (the torchvision sweep).

Each class follows the named torchvision source's forward at toy sizes, so the tests stay fast;
tests never import torchvision itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


# RAFT: torchvision/models/optical_flow/raft.py (CorrBlock, RAFT.forward) and _utils.py (grid_sample, make_coords_grid).
# The correlation lookup concatenates reshaped grid_sample outputs on dim -1, called from the model's own forward.
def grid_sample(img, absolute_grid, mode="bilinear", align_corners=None):
    h, w = img.shape[-2:]
    xgrid, ygrid = absolute_grid.split([1, 1], dim=-1)
    xgrid = 2 * xgrid / (w - 1) - 1
    if h > 1:
        ygrid = 2 * ygrid / (h - 1) - 1
    normalized_grid = torch.cat([xgrid, ygrid], dim=-1)
    return F.grid_sample(img, normalized_grid, mode=mode, align_corners=align_corners)


def make_coords_grid(batch_size, h, w):
    coords = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    coords = torch.stack(coords[::-1], dim=0).float()
    return coords[None].repeat(batch_size, 1, 1, 1)


class CorrBlock(nn.Module):
    def __init__(self, *, num_levels=2, radius=1):
        super().__init__()
        self.num_levels, self.radius = num_levels, radius
        self.corr_pyramid = [torch.tensor(0)]
        self.out_channels = num_levels * (2 * radius + 1) ** 2

    def build_pyramid(self, fmap1, fmap2):
        batch_size, num_channels, h, w = fmap1.shape
        corr = torch.matmul(fmap1.view(batch_size, num_channels, h * w).transpose(1, 2),
                            fmap2.view(batch_size, num_channels, h * w))
        corr_volume = (corr.view(batch_size, h, w, 1, h, w) / torch.sqrt(torch.tensor(num_channels)))
        corr_volume = corr_volume.reshape(batch_size * h * w, 1, h, w)
        self.corr_pyramid = [corr_volume]
        for _ in range(self.num_levels - 1):
            corr_volume = F.avg_pool2d(corr_volume, kernel_size=2, stride=2)
            self.corr_pyramid.append(corr_volume)

    def index_pyramid(self, centroids_coords):
        side = 2 * self.radius + 1
        di = torch.linspace(-self.radius, self.radius, side)
        delta = torch.stack(torch.meshgrid(di, di, indexing="ij"), dim=-1).view(1, side, side, 2)
        batch_size, _, h, w = centroids_coords.shape
        centroids_coords = centroids_coords.permute(0, 2, 3, 1).reshape(batch_size * h * w, 1, 1, 2)
        indexed_pyramid = []
        for corr_volume in self.corr_pyramid:
            sampling_coords = centroids_coords + delta
            indexed_pyramid.append(grid_sample(corr_volume, sampling_coords, align_corners=True).view(batch_size, h, w, -1))
            centroids_coords = centroids_coords / 2
        return torch.cat(indexed_pyramid, dim=-1).permute(0, 3, 1, 2).contiguous()


class RaftLookup(nn.Module):
    """RAFT, reduced: a shared feature encoder on both images, the correlation lookup, a motion encoder and flow head."""

    def __init__(self):
        super().__init__()
        self.feature_encoder = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
                                             nn.Conv2d(16, 16, 3, stride=2, padding=1))
        self.corr_block = CorrBlock()
        self.convc1 = nn.Conv2d(self.corr_block.out_channels, 16, 1)
        self.convf1 = nn.Conv2d(2, 8, 3, padding=1)
        self.conv = nn.Conv2d(24, 14, 3, padding=1)
        self.flow_head = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 2, 3, padding=1))

    def forward(self, image1, image2):
        fmaps = self.feature_encoder(torch.cat([image1, image2], dim=0))
        fmap1, fmap2 = torch.chunk(fmaps, chunks=2, dim=0)
        self.corr_block.build_pyramid(fmap1, fmap2)
        batch_size, _, h, w = fmap1.shape
        coords0 = make_coords_grid(batch_size, h, w)
        coords1 = make_coords_grid(batch_size, h, w) + fmap1[:, :2].tanh()  # a flow estimate, as after an update
        corr_features = self.corr_block.index_pyramid(centroids_coords=coords1)
        flow = coords1 - coords0
        corr = F.relu(self.convc1(corr_features))
        flow_features = F.relu(self.convf1(flow))
        motion = F.relu(self.conv(torch.cat([corr, flow_features], dim=1)))
        return self.flow_head(torch.cat([motion, flow], dim=1))
