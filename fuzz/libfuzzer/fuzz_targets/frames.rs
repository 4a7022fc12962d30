#![no_main]
use econtext_fuzz::targets::Target;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    Target::Frames.run(data);
});
