"""Super-resolution models and their training: paired LR/HR patches (`data`), EDSR and RCAN-lite
(`models`), the SR task on fractalpre's trainer (`trainer`), PSNR/SSIM (`evaluate`) and tiled upscaling
(`upscale`)."""
