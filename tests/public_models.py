"""Model code copied from public repositories, assembled into small models (issue 9).

The layers live in tests/public/, each file copied unchanged from its repository (the first lines
name the repository, path and commit; convnext.py defines the two timm helpers it imported). This file only builds them at toy sizes, the way their
repositories' own model files do, with the wrapper copied where there is one. Code under GPL or
AGPL (Pytorch-UNet, YOLOv5) is not copied here; benchmarks/coverage_local.py notes how they fared.
`MODELS` maps a name to ``(factory, example_inputs)``.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from public.cifar_dpn import DPN
from public.convnext import ConvNeXt
from public.detr_transformer import Transformer
from public.hifigan_models import Generator as HifiGenerator
from public.tcn import TemporalConvNet


def _tokens(shape, high):
    return torch.randint(0, high, shape, generator=torch.Generator().manual_seed(0))


# locuslab/TCN@2f8c2b817050206397458dfd1f5a25ce8a32fe65 TCN/word_cnn/model.py, unchanged but for the
# import (``from TCN.tcn import TemporalConvNet``) and the print when weights are tied.
class TCN(nn.Module):

    def __init__(self, input_size, output_size, num_channels,
                 kernel_size=2, dropout=0.3, emb_dropout=0.1, tied_weights=False):
        super(TCN, self).__init__()
        self.encoder = nn.Embedding(output_size, input_size)
        self.tcn = TemporalConvNet(input_size, num_channels, kernel_size, dropout=dropout)

        self.decoder = nn.Linear(num_channels[-1], output_size)
        if tied_weights:
            if num_channels[-1] != input_size:
                raise ValueError('When using the tied flag, nhid must be equal to emsize')
            self.decoder.weight = self.encoder.weight
        self.drop = nn.Dropout(emb_dropout)
        self.emb_dropout = emb_dropout
        self.init_weights()

    def init_weights(self):
        self.encoder.weight.data.normal_(0, 0.01)
        self.decoder.bias.data.fill_(0)
        self.decoder.weight.data.normal_(0, 0.01)

    def forward(self, input):
        """Input ought to have dimension (N, C_in, L_in), where L_in is the seq_len; here the input is (N, L, C)"""
        emb = self.drop(self.encoder(input))
        y = self.tcn(emb.transpose(1, 2)).transpose(1, 2)
        y = self.decoder(y)
        return y.contiguous()


def tcn_word():  # word_cnn/word_cnn_test.py builds TCN(emsize, n_words, [nhid] * (levels - 1) + [emsize], ...)
    return TCN(32, 50, [48, 48, 32], kernel_size=3)


def tcn_word_tied():
    return TCN(32, 50, [48, 48, 32], kernel_size=3, tied_weights=True)


# pytorch/examples@77f55b912142e11fcfdf5b530231fb9c52f181e8 dcgan/main.py: Generator, unchanged; nz, ngf
# and nc are that script's globals (100, 64, 3 there), set small here.
nz, ngf, nc = 16, 8, 3


class Generator(nn.Module):
    def __init__(self, ngpu):
        super(Generator, self).__init__()
        self.ngpu = ngpu
        self.main = nn.Sequential(
            # input is Z, going into a convolution
            nn.ConvTranspose2d(     nz, ngf * 8, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            # state size. (ngf*8) x 4 x 4
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            # state size. (ngf*4) x 8 x 8
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            # state size. (ngf*2) x 16 x 16
            nn.ConvTranspose2d(ngf * 2,     ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            # state size. (ngf) x 32 x 32
            nn.ConvTranspose2d(    ngf,      nc, 4, 2, 1, bias=False),
            nn.Tanh()
            # state size. (nc) x 64 x 64
        )

    def forward(self, input):
        
        if (input.is_cuda or input.is_xpu) and self.ngpu > 1:
            output = nn.parallel.data_parallel(self.main, input, range(self.ngpu))
        else:
            output = self.main(input)
        return output


# facebookresearch/detr@29901c51d7fe8712168b8d0d64351170bc0f83e0 models/detr.py: MLP, unchanged.
class MLP(nn.Module):
    """ Very simple multi-layer perceptron (also called FFN)"""

    def __init__(self, input_dim, hidden_dim, output_dim, num_layers):
        super().__init__()
        self.num_layers = num_layers
        h = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip([input_dim] + h, h + [output_dim]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = torch.nn.functional.relu(layer(x)) if i < self.num_layers - 1 else layer(x)
        return x


class NestedTensor:  # detr util/misc.py's NestedTensor, reduced to what the code below reads
    def __init__(self, tensors, mask):
        self.tensors, self.mask = tensors, mask

    def decompose(self):
        return self.tensors, self.mask


# facebookresearch/detr@29901c5 models/position_encoding.py: PositionEmbeddingLearned, unchanged.
class PositionEmbeddingLearned(nn.Module):
    """
    Absolute pos embedding, learned.
    """
    def __init__(self, num_pos_feats=256):
        super().__init__()
        self.row_embed = nn.Embedding(50, num_pos_feats)
        self.col_embed = nn.Embedding(50, num_pos_feats)
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.uniform_(self.row_embed.weight)
        nn.init.uniform_(self.col_embed.weight)

    def forward(self, tensor_list: NestedTensor):
        x = tensor_list.tensors
        h, w = x.shape[-2:]
        i = torch.arange(w, device=x.device)
        j = torch.arange(h, device=x.device)
        x_emb = self.col_embed(i)
        y_emb = self.row_embed(j)
        pos = torch.cat([
            x_emb.unsqueeze(0).repeat(h, 1, 1),
            y_emb.unsqueeze(1).repeat(1, w, 1),
        ], dim=-1).permute(2, 0, 1).unsqueeze(0).repeat(x.shape[0], 1, 1, 1)
        return pos


class DETRHead(nn.Module):
    """DETR after its backbone: models/detr.py's DETR.__init__ and forward (aux_loss=False), with the
    backbone's feature map as input and the learned position embedding (``--position_embedding
    learned``) computed on it, as detr's Joiner does."""

    def __init__(self, in_channels=24, hidden_dim=32, num_queries=6, num_classes=5):
        super().__init__()
        self.transformer = Transformer(d_model=hidden_dim, nhead=4, num_encoder_layers=2, num_decoder_layers=2,
                                       dim_feedforward=64, dropout=0.0)
        self.position_embedding = PositionEmbeddingLearned(hidden_dim // 2)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.input_proj = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)

    def forward(self, features):
        mask = torch.zeros(features.shape[0], *features.shape[2:], dtype=torch.bool, device=features.device)
        src, mask = NestedTensor(features, mask).decompose()
        pos = self.position_embedding(NestedTensor(src, mask)).to(src.dtype)
        hs = self.transformer(self.input_proj(src), mask, self.query_embed.weight, pos)[0]

        outputs_class = self.class_embed(hs)
        outputs_coord = self.bbox_embed(hs).sigmoid()
        out = {'pred_logits': outputs_class[-1], 'pred_boxes': outputs_coord[-1]}
        return out


def hifigan_small():  # jik876/hifi-gan: its config_v1.json's layout (resblock "1"), narrower and shorter
    h = SimpleNamespace(resblock="1", upsample_rates=[4, 2], upsample_kernel_sizes=[8, 4], upsample_initial_channel=32,
                        resblock_kernel_sizes=[3, 5], resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]])
    return HifiGenerator(h)


def dpn_small():  # kuangliu/pytorch-cifar models/dpn.py's DPN at a small config (DPN26's shape, narrower)
    cfg = {'in_planes': (32, 32, 64, 64), 'out_planes': (16, 32, 48, 64), 'num_blocks': (2, 2, 2, 2),
           'dense_depth': (4, 8, 8, 16)}
    return DPN(cfg)


def vit_lucidrains():
    from public.vit_pytorch import ViT  # needs einops (the `test` extra)

    return ViT(image_size=16, patch_size=4, num_classes=10, dim=32, depth=2, heads=4, mlp_dim=64, dim_head=8)


MODELS = {
    "TCN word model (locuslab/TCN)": (tcn_word, lambda: _tokens((2, 20), 50)),
    "TCN, tied weights (locuslab/TCN)": (tcn_word_tied, lambda: _tokens((2, 20), 50)),
    "DCGAN generator (pytorch/examples)": (lambda: Generator(0), lambda: torch.randn(2, nz, 1, 1)),
    "DETR transformer (facebookresearch/detr)": (DETRHead, lambda: torch.randn(2, 24, 4, 4)),
    "DPN (kuangliu/pytorch-cifar)": (dpn_small, lambda: torch.randn(1, 3, 32, 32)),
    "ViT (lucidrains/vit-pytorch)": (vit_lucidrains, lambda: torch.randn(2, 3, 16, 16)),
    "HiFi-GAN generator (jik876/hifi-gan)": (hifigan_small, lambda: torch.randn(1, 80, 12)),
    "ConvNeXt (facebookresearch/ConvNeXt)": (
        lambda: ConvNeXt(depths=[1, 1, 1, 1], dims=[8, 16, 32, 64], num_classes=10, layer_scale_init_value=0.5),
        lambda: torch.randn(1, 3, 32, 32)),
}
