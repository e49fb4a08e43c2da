//! Sentence encoders on tch: model folders in and out, BERT and Gemma3 backbones, pooling.
