"""Sa2VA: conversion of the published checkpoints and the official `predict_forward` semantics."""
