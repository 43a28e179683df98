"""Media as data: images and video files read with limits (`image`, `video_file`, `kind`), masks (`masks`: one RLE,
one erosion, `VideoMask`, PNG masks), drawing (`render`) and exports (`export`). Nothing here imports torch or the
model; `model.video` and `chat` build on it."""
