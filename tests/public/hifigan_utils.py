# init_weights and get_padding copied unchanged from https://github.com/jik876/hifi-gan/blob/4769534d45265d52a904b850da5a622601885777/utils.py
# (MIT licence); the rest of that file (plotting, checkpoints) is left out.
import torch


def init_weights(m, mean=0.0, std=0.01):
    classname = m.__class__.__name__
    if classname.find("Conv") != -1:
        m.weight.data.normal_(mean, std)


def get_padding(kernel_size, dilation=1):
    return int((kernel_size*dilation - dilation)/2)
