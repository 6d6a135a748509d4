#[cachelet_macros::read("get_item")]
async fn get_item<T: Default>(item_id: u64) -> Result<T, String> {
    let _ = item_id;
    Ok(T::default())
}

fn main() {}
