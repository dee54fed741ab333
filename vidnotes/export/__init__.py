"""Building the model store: conversion, ONNX export, int8, parity. May import torch."""
