pub fn main(_args: Vec<String>) -> anyhow::Result<u8> {
    anyhow::bail!("not built yet")
}
